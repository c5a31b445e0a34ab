"""Image file -> label map through every runtime, against transformers in the same run.

    python benchmarks/export.py --archs swin-t --sizes 512x1024          # one cell (what CI-size machines take)
    python benchmarks/export.py                                          # Swin-T and Swin-L, 512x1024 and 1024x2048
    python benchmarks/export.py --impls transformers torch-fp32 openvino-bf16 --repeats 5

Implementations (all semantic post-processing at the image size, no resize, same images):

* transformers: its processor, model and ``post_process_semantic_segmentation``;
* torch-fp32 / torch-bf16 / torch-int8: ``Segmenter`` with our precision modes;
* onnxruntime / openvino (fp32) / openvino-bf16: ``Segmenter`` over the exported .onnx.

Per architecture, the export itself runs in its own process, timed, with its file size and
peak memory. Then every implementation runs in a process of its own (one after another, so
their memories never add up: all seven in one process ran a 24 GB machine out of memory on
Swin-L at 1024x2048): it loads, runs once to warm up (OpenVINO compiles per size), then keeps
its fastest of ``--repeats`` calls; ``--rounds`` repeats that sequence of processes to
interleave them on a shared machine. Each row also gives the process's peak resident memory
(load included). Labels are compared with torch-fp32's. A process that fails or is killed
(e.g. by the OOM killer) is a row saying so, and the rest goes on. Writes
benchmarks/results/export.json and .md (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import checkpoint, machine, machine_text, run_child, size_arg, write_results  # noqa: E402
from end_to_end import build, make_images  # noqa: E402

IMPLS = ("transformers", "torch-fp32", "torch-bf16", "torch-int8", "onnxruntime", "openvino", "openvino-bf16")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def runner(impl: str, folder: str, onnx_path: str, threads: int) -> Callable[[list[str]], list[Any]]:
    """paths -> label maps for one implementation."""
    if impl == "transformers":
        return build("transformers", folder)[0]
    from mask2former.processor import Mask2FormerImageProcessor
    from mask2former.segmenter import Segmenter

    kind, _, precision = impl.partition("-")
    backend = "torch" if kind == "torch" else kind
    model = folder if backend == "torch" else onnx_path
    seg = Segmenter(model, task="semantic", device="cpu", resize="config", backend=backend,
                    processor=Mask2FormerImageProcessor(do_resize=False), precision=precision or "fp32",
                    num_threads=threads)
    if seg.precision.message:
        print(f"{impl}: {seg.precision.message}", file=sys.stderr)
    return lambda paths: [r.labels for r in seg(paths, batch_size=len(paths))]


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """In the child: the export, or one implementation's timing (labels saved to job["labels"])."""
    import torch

    torch.set_num_threads(job["threads"])
    if job["impl"] == "export":
        from mask2former.export import export_onnx

        report = export_onnx(job["folder"], job["onnx"])
        return {"seconds": report.seconds, "bytes": report.bytes}
    import numpy as np

    t = time.perf_counter()
    run = runner(job["impl"], job["folder"], job["onnx"], job["threads"])
    load_s = time.perf_counter() - t
    labels = run(job["paths"])  # warm-up
    np.savez(job["labels"], *labels)
    best = float("inf")
    for _ in range(job["repeats"]):
        t = time.perf_counter()
        run(job["paths"])
        best = min(best, time.perf_counter() - t)
    return {"seconds": best, "load_s": load_s}


def in_child(job: dict[str, Any]) -> dict[str, Any]:
    """``worker(job)`` in a fresh interpreter: its result, peak MiB and status ("ok" or why not)."""
    code, out, err, peak = run_child(__file__, job)
    if code == 0:
        return dict(json.loads(out.strip().splitlines()[-1]), peak_mib=peak, status="ok")
    if code < 0:
        name = signal.Signals(-code).name
        why = f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    else:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        why = f"failed: {lines[-1] if lines else f'exit code {code}'}"
    print(f"{job['impl']}: {why}\n{err[-1500:]}", file=sys.stderr)
    return {"seconds": float("nan"), "peak_mib": peak, "status": why}


def bench_arch(arch: str, sizes: list[tuple[int, int]], impls: list[str], repeats: int, rounds: int,
               threads: int, work: str) -> list[dict[str, Any]]:
    import numpy as np

    folder = checkpoint(arch)
    onnx_path = os.path.join(work, f"{arch}.onnx")
    base = dict(folder=folder, onnx=onnx_path, threads=threads)
    export = in_child(dict(base, impl="export"))
    if export["status"] != "ok":
        impls = [i for i in impls if i in ("transformers",) or i.startswith("torch")]
    rows = []
    info = machine()
    for size in sizes:
        paths = make_images(size, 1, work)
        labels = {impl: os.path.join(work, f"{arch}-{size[0]}x{size[1]}-{impl}.npz") for impl in impls}
        tries: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
        for _ in range(rounds):
            for impl in impls:
                tries[impl].append(in_child(dict(base, impl=impl, paths=paths, repeats=repeats,
                                                 labels=labels[impl])))
        results = {}
        for impl, got in tries.items():  # the fastest good round (else the first failure), the highest peak
            ok = [r for r in got if r["status"] == "ok"]
            results[impl] = dict(min(ok, key=lambda r: r["seconds"]) if ok else got[0],
                                 peak_mib=max(r["peak_mib"] for r in got))
        loaded = {impl: [z[k] for k in z.files] for impl, path in labels.items() if os.path.exists(path)
                  for z in [np.load(path)]}
        ref = loaded.get("torch-fp32")
        t_ref = results.get("transformers", {}).get("seconds", float("nan"))
        for impl in impls:
            res = results[impl]
            agree = float(np.mean([(a == b).mean() for a, b in zip(loaded[impl], ref)])) \
                if ref is not None and impl in loaded and res["status"] == "ok" else float("nan")
            rows.append(dict(arch=arch, size=f"{size[0]}x{size[1]}", impl=impl, seconds=res["seconds"],
                             vs_transformers=t_ref / res["seconds"], labels_equal_to_torch_fp32=agree,
                             peak_mib=res["peak_mib"], status=res["status"], export_s=export.get("seconds"),
                             export_peak_mib=export["peak_mib"], export_status=export["status"],
                             onnx_mib=export.get("bytes", float("nan")) / 2**20, machine=info))
    return rows


def table(rows: list[dict[str, Any]], threads: int, repeats: int, rounds: int) -> str:
    lines = [f"Image -> label map, batch 1, {threads} threads, each runtime in its own process (best of {repeats} "
             f"calls x {rounds} round(s), after a warm-up); speed-up = transformers time / this time; "
             f"peak = the process's peak resident memory, load included. "
             f"Machine: {machine_text(rows[0]['machine'] if rows else None)}.", "",
             "| arch | size | runtime | s/image | speed-up vs transformers | labels = torch fp32 | peak MiB "
             "| export s | export peak MiB | .onnx MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "ok":
            cells = f"{r['seconds']:.3f} | {r['vs_transformers']:.2f}x | {100 * r['labels_equal_to_torch_fp32']:.3f} %"
        else:
            cells = f"{r['status']} | - | -"
        export = f"{r['export_s']:.0f}" if r["export_status"] == "ok" else r["export_status"]
        lines.append(f"| {r['arch']} | {r['size']} | {r['impl']} | {cells} | {r['peak_mib']:.0f} | {export} "
                     f"| {r['export_peak_mib']:.0f} | {r['onnx_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):  # a child of in_child()
        print(json.dumps(worker(json.loads(sys.argv[1]))))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["swin-t", "swin-l"], choices=["swin-t", "swin-l"])
    p.add_argument("--sizes", nargs="+", type=size_arg, default=["512x1024", "1024x2048"])
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per process, after one warm-up")
    p.add_argument("--rounds", type=int, default=1, help="times the sequence of processes runs (interleaving)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    p.add_argument("--out", default=os.path.join(RESULTS, "export"))
    args = p.parse_args()
    import torch

    threads = args.threads or torch.get_num_threads()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    rows = []
    with tempfile.TemporaryDirectory(prefix="m2f-export-bench-") as work:
        for arch in args.archs:
            rows += bench_arch(arch, sizes, args.impls, args.repeats, args.rounds, threads, work)
    write_results(args.out, rows, table(rows, threads, args.repeats, args.rounds))


if __name__ == "__main__":
    main()
