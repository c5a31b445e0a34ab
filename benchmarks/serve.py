"""HTTP serving throughput and latency: ``mask2former serve`` with dynamic batching on and
off, against transformers' ``pipeline("image-segmentation")`` behind a minimal FastAPI app,
on the same weights (the demo model folder, which transformers loads) and the same image.

    python benchmarks/serve.py                          # concurrency 1, 4, 16; demo model
    python benchmarks/serve.py --model FOLDER --image photo.png --requests 16 32 64 --threads 2

Every server is its own process on loopback with the same CPU threads; all answer
``POST /`` with the raw image and return the Hugging Face list (label, score, base64 PNG
mask) for the semantic task, so the client work per answer is the same. The client is a
separate process (this one) with CONCURRENCY threads; each level first sends a few
warm-up requests. All three servers run at once (idle when not measured) and are measured in
turn, ``--rounds`` times per level, keeping each one's best round: on a shared machine the
load changes between rounds, not within one comparison. Writes benchmarks/results/serve.json
and .md (or --out).
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import io
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi import FastAPI, Request  # module level: the route's annotations resolve here

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from common import write_results  # noqa: E402
from serve_server import DEMO_MODEL, STREET, free_port, launch, serve  # noqa: E402


def pipeline_app(model: str) -> Any:
    """The obvious alternative: transformers' pipeline in a FastAPI route, nothing else."""
    from PIL import Image
    from transformers import pipeline

    pipe = pipeline("image-segmentation", model=model, device="cpu")
    pipe(Image.new("RGB", (64, 64)), subtask="semantic")  # warm-up
    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/")
    async def segment(request: Request) -> list[dict[str, Any]]:
        from starlette.concurrency import run_in_threadpool

        image = Image.open(io.BytesIO(await request.body())).convert("RGB")
        out = await run_in_threadpool(pipe, image, subtask="semantic")
        masks = []
        for e in out:
            buf = io.BytesIO()
            e["mask"].save(buf, format="PNG")
            masks.append({"label": e["label"], "score": e["score"], "mask": base64.b64encode(buf.getvalue()).decode()})
        return masks

    return app


def measure(url: str, body: bytes, concurrency: int, requests: int) -> dict[str, float]:
    import httpx

    client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=concurrency))

    def one(_: int) -> float:
        start = time.perf_counter()
        r = client.post(url + "/", content=body, headers={"content-type": "image/png"})
        r.raise_for_status()
        assert r.json(), "empty answer"
        return time.perf_counter() - start

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(min(concurrency, 4))))  # warm-up: connections, first-size paths
        start = time.perf_counter()
        latencies = np.array(list(pool.map(one, range(requests)))) * 1000
        wall = time.perf_counter() - start
    client.close()
    return {"req_s": requests / wall, "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99))}


def table(rows: list[dict[str, Any]], levels: list[int]) -> str:
    lines = ["| server | concurrency | req/s | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['server']} | {r['concurrency']} | {r['req_s']:.2f} | {r['p50_ms']:.0f} "
                     f"| {r['p99_ms']:.0f} |")
    by = {(r["server"], r["concurrency"]): r for r in rows}
    lines += ["", "| concurrency | batching on / off (req/s) | ours (batching) / transformers (req/s) | "
                  "ours / transformers (p50) |", "|---:|---:|---:|---:|"]
    for c in levels:
        on, off, ref = by[("ours, batching", c)], by[("ours, no batching", c)], by[("transformers pipeline", c)]
        lines.append(f"| {c} | {on['req_s'] / off['req_s']:.2f}x | {on['req_s'] / ref['req_s']:.2f}x | "
                     f"{on['p50_ms'] / ref['p50_ms']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEMO_MODEL)
    p.add_argument("--image", default=STREET)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, nargs="+", default=[12, 24, 48], help="per concurrency level")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of every server")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per level; the best is kept")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--out", default=os.path.join(HERE, "results", "serve"))
    p.add_argument("--pipeline-app", type=int, metavar="PORT", help=argparse.SUPPRESS)  # internal: run the alternative
    args = p.parse_args()
    if args.pipeline_app:
        import uvicorn

        uvicorn.run(pipeline_app(args.model), host="127.0.0.1", port=args.pipeline_app, log_level="warning")
        return
    body = open(args.image, "rb").read()
    logs = os.environ.get("TMPDIR", "/tmp")
    port = free_port()
    servers = {
        "ours, batching": lambda: serve("--max-batch-size", str(args.max_batch_size), "--max-wait-ms",
                                        str(args.max_wait_ms), "--queue-size", "256", "--no-access-log",
                                        model=args.model, log_dir=logs, threads=args.threads),
        "ours, no batching": lambda: serve("--max-batch-size", "1", "--queue-size", "256", "--no-access-log",
                                           model=args.model, log_dir=logs, threads=args.threads),
        "transformers pipeline": lambda: launch([sys.executable, os.path.abspath(__file__), "--model", args.model,
                                                 "--pipeline-app", str(port)], port,
                                                os.path.join(logs, f"pipeline-{port}.log"), threads=args.threads),
    }
    rows = []
    with contextlib.ExitStack() as stack:
        running = {name: stack.enter_context(start()) for name, start in servers.items()}
        for c, n in zip(args.concurrency, args.requests):
            best: dict[str, dict[str, Any]] = {}
            for _ in range(args.rounds):
                for name, server in running.items():
                    row = {"server": name, "concurrency": c, "requests": n, **measure(server.url, body, c, n)}
                    print(row, flush=True)
                    if name not in best or row["req_s"] > best[name]["req_s"]:
                        best[name] = row
            rows += best.values()
    write_results(args.out, rows, table(rows, args.concurrency))


if __name__ == "__main__":
    main()
