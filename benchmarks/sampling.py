"""The pixel decoder's deformable attention alone: the reference sampling (``grid_sample`` per
level, what fp32 runs, bit-identical to the original) against the ``embedding_bag`` one at
several query chunk sizes, in fp32 and under bf16 autocast, on a quiet machine and beside a
competing process (a second copy of the same job), since a kernel that wins only when the
machine is idle must not become a default.

    python benchmarks/sampling.py                          # Swin-L 1024x2048 level shapes
    python benchmarks/sampling.py --size 512x1024 --repeats 5
    python benchmarks/sampling.py --end-to-end swin-l --size 1024x2048   # Segmenter, image -> labels

One MSDeformAttn (256 channels, 8 heads, 3 levels, 4 points) with random offsets spread over
each map, on the stride 8/16/32 levels of ``--size``; each configuration's best of
``--repeats`` calls, interleaved, in one process per condition. Ratios are reference time /
this time in the same condition and precision. With ``--end-to-end ARCH`` the same comparison
runs through ``Segmenter`` (image file -> label map, random-weight checkpoint), in the modes
that may use the fast form (bf16, int8), best and median of the calls. Writes
benchmarks/results/sampling.json / .md (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, machine_text, size_arg, table, write_results  # noqa: E402

CHUNKS = (1024, 8192, 0)  # 0: every query of the image in one step


def child(args: dict[str, Any]) -> dict[str, float]:
    """Times every (precision, path) in this process; loops forever as a competitor."""
    import torch

    from mask2former.pixel_decoder import MSDeformAttn, reference_points

    torch.manual_seed(0)
    h, w = args["size"]
    shapes = [(h // s, w // s) for s in (32, 16, 8)]
    s = sum(a * b for a, b in shapes)
    attn = MSDeformAttn(256, 3, 8, 4).eval()
    with torch.no_grad():  # offsets of a few pixels, differing per query, as trained ones do
        attn.sampling_offsets.weight.normal_(0, 0.05)
        attn.attention_weights.weight.normal_(0, 0.05)
    query, value = torch.randn(1, s, 256), torch.randn(1, s, 256)
    ref = reference_points(shapes, query.device, query.dtype).expand(1, -1, 3, -1)
    configs = [(p, c) for p in ("fp32", "bf16") for c in (None, *CHUNKS)]

    @torch.inference_mode()
    def call(precision: str, chunk: int | None) -> None:
        attn.inexact = chunk is not None
        attn.chunk = chunk or s
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            attn(query, ref, value, shapes)

    best = {f"{p} {c}": float("inf") for p, c in configs}
    for cfg in configs:
        call(*cfg)  # warm-up
    rounds = 0
    while args["forever"] or rounds < args["repeats"]:
        for p, c in configs:
            t = time.perf_counter()
            call(p, c)
            best[f"{p} {c}"] = min(best[f"{p} {c}"], time.perf_counter() - t)
        rounds += 1
    return best


def child_end_to_end(args: dict[str, Any]) -> dict[str, float]:
    """Segmenter in ``args["precision"]``, alternating the two sampling forms per call."""
    import statistics

    from common import checkpoint
    from end_to_end import make_images
    from mask2former import Segmenter
    from mask2former.pixel_decoder import MSDeformAttn
    from mask2former.processor import Mask2FormerImageProcessor

    image = make_images(tuple(args["size"]), 1, os.path.dirname(checkpoint(args["arch"])))
    seg = Segmenter(checkpoint(args["arch"]), task="semantic", precision=args["precision"], resize="config",
                    processor=Mask2FormerImageProcessor(do_resize=False))
    # Only the sampling decision changes between the two forms; everything else the mode does stays.
    forms = {"fast": MSDeformAttn.samples_fast, "reference": lambda self, query: False}

    def call(form: str) -> float:
        MSDeformAttn.samples_fast = forms[form]  # type: ignore[method-assign]
        t = time.perf_counter()
        seg(image)
        return time.perf_counter() - t

    for form in forms:
        call(form)  # warm-up
    times: dict[str, list[float]] = {form: [] for form in forms}
    while args["forever"] or len(times["fast"]) < args["repeats"]:
        for form in forms:
            times[form].append(call(form))
    return {f"{form} {stat}": fn(ts) for form, ts in times.items()
            for stat, fn in (("best", min), ("median", statistics.median))}


def measure(args: dict[str, Any], loaded: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, json.dumps(dict(args, forever=False))]
    competitor = subprocess.Popen([sys.executable, __file__, json.dumps(dict(args, forever=True))],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if loaded else None
    try:
        if competitor:
            time.sleep(60 if args.get("arch") == "swin-l" else 20)  # past its set-up and warm-up
        out = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        if competitor:
            competitor.kill()
            competitor.wait()
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def label(chunk: str) -> str:
    return {"None": "reference (grid_sample)", "0": "embedding_bag, all queries"}.get(
        chunk, f"embedding_bag, {chunk} queries")


def main() -> None:
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        job = json.loads(sys.argv[1])
        print(json.dumps(child_end_to_end(job) if job.get("arch") else child(job)))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=size_arg, default="1024x2048")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--end-to-end", dest="arch", choices=["swin-t", "swin-l"], default=None,
                   help="time Segmenter on this random-weight architecture instead of one layer")
    p.add_argument("--precisions", nargs="+", default=["bf16", "int8"], help="with --end-to-end")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "sampling"))
    a = p.parse_args()
    size = [int(v) for v in a.size.split("x")]
    if a.arch:
        return end_to_end(a, size)
    args = dict(size=size, repeats=a.repeats)
    rows = []
    for loaded in (False, True):
        best = measure(args, loaded)
        for key, seconds in best.items():
            precision, chunk = key.split(" ")
            rows.append(dict(size=a.size, condition="loaded" if loaded else "quiet", precision=precision,
                             path=label(chunk), seconds=seconds,
                             speedup_vs_reference=best[f"{precision} None"] / seconds, machine=machine()))
    header = ["condition", "precision", "sampling", "s / call", "speed-up vs reference"]
    cells = [[r["condition"], r["precision"], r["path"], f"{r['seconds']:.3f}", f"{r['speedup_vs_reference']:.2f}x"]
             for r in rows]
    text = (f"One deformable-attention layer on the level shapes of {a.size} (1 image), best of {a.repeats} "
            f"calls; loaded = beside a second copy of the same job. Machine: {machine_text(machine())}.\n\n"
            + "\n".join(table(header, cells)) + "\n")
    write_results(a.out, rows, text)


def end_to_end(a: argparse.Namespace, size: list[int]) -> None:
    rows = []
    for precision in a.precisions:
        for loaded in (False, True):
            got = measure(dict(arch=a.arch, size=size, precision=precision, repeats=a.repeats), loaded)
            for stat in ("best", "median"):
                rows.append(dict(arch=a.arch, size=a.size, precision=precision, stat=stat,
                                 condition="loaded" if loaded else "quiet", fast_s=got[f"fast {stat}"],
                                 reference_s=got[f"reference {stat}"],
                                 ratio=got[f"fast {stat}"] / got[f"reference {stat}"], machine=machine()))
    header = ["precision", "condition", "statistic", "reference sampling s", "embedding_bag s", "time ratio"]
    cells = [[r["precision"], r["condition"], r["stat"], f"{r['reference_s']:.3f}", f"{r['fast_s']:.3f}",
              f"{r['ratio']:.2f}"] for r in rows]
    text = (f"{a.arch} {a.size}, image file -> label map through Segmenter, the two sampling forms alternated "
            f"({a.repeats} calls each after a warm-up); loaded = beside a second copy of the same job; time "
            f"ratio < 1: embedding_bag faster. Machine: {machine_text(machine())}.\n\n"
            + "\n".join(table(header, cells)) + "\n")
    write_results(a.out, rows, text)

if __name__ == "__main__":
    main()
