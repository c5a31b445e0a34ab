"""Sliding-window semantic inference on an image run at its own size (no resize): the
streamed band (``mask2former.window_stream``, what ``Segmenter`` uses) against the full
accumulator (``tta.sliding_window_labels``: every window summed into one (C, H, W) map), in
one run: seconds, extra peak memory over a warmed-up process, and whether the labels are equal.

    python benchmarks/sliding_window.py                                 # demo model, 2048 x 2048
    python benchmarks/sliding_window.py --model CHECKPOINT --size 4000 6000 --window 512 1024

Each mode runs in a fresh process (peak RSS is its own): load, warm up on one window, then
segment the image once. The machine may be shared: read the ratios as noisy.

Writes benchmarks/results/sliding_window.json and .md (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, machine_text, write_results  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUN = r"""
import hashlib, json, resource, sys, time
import numpy as np, torch
from mask2former import tta
from mask2former.window_stream import streamed_window_labels
from mask2former.segmenter import Segmenter

mode, model, h, w, wh, ww = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
seg = Segmenter(model, task="semantic", resize="config", sliding_window=(wh, ww))
seg.processor.do_resize = False  # the network sees the image at its own size
rng = np.random.default_rng(0)
seg(rng.integers(0, 256, (wh, ww, 3), dtype=np.uint8))  # warm up
img = np.zeros((h, w, 3), np.uint8)  # a street-like scene, so the labels are not constant
img[: h // 3], img[h // 3: 2 * h // 3], img[2 * h // 3:] = (135, 180, 235), (120, 110, 100), (80, 80, 85)
img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
with torch.inference_mode():
    if mode == "streamed":
        labels = streamed_window_labels(seg, img, (wh, ww), seg.window_overlap)
    else:
        labels = tta.sliding_window_labels(seg, img, (wh, ww), seg.window_overlap)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "extra_peak_mb": peak - before / 1024, "peak_mb": peak,
                  "classes": len(seg.info.id2label),
                  "labels_sha1": hashlib.sha1(labels.tobytes()).hexdigest()}))
"""


def measure(mode: str, model: str, size: list[int], window: list[int], threads: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", RUN, mode, model, *map(str, size + window)], capture_output=True,
                         text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(ROOT, "models", "demo-street"))
    p.add_argument("--size", type=int, nargs=2, default=[2048, 2048], metavar=("H", "W"))
    p.add_argument("--window", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "sliding_window"))
    args = p.parse_args()
    res = {mode: measure(mode, args.model, args.size, args.window, args.threads) for mode in ("full", "streamed")}
    full, streamed = res["full"], res["streamed"]
    equal = full["labels_sha1"] == streamed["labels_sha1"]
    rows = [dict(mode=m, size=args.size, window=args.window, threads=args.threads, **r) for m, r in res.items()]
    table = (f"Sliding windows, {args.size[0]}x{args.size[1]} image at its own size, {args.window[0]}x"
             f"{args.window[1]} windows (overlap 1/3), {full['classes']} classes, {args.threads} thread(s); "
             f"{machine_text(machine())}\n\n"
             "| mode | seconds | vs full | peak RSS MB | above the warmed-up process MB |\n|---|---|---|---|---|\n")
    for m, r in res.items():
        table += (f"| {m} | {r['seconds']:.2f} | {r['seconds'] / full['seconds']:.2f}x | {r['peak_mb']:.0f} | "
                  f"{r['extra_peak_mb']:.0f} |\n")
    table += f"\nLabels equal: {'yes' if equal else 'NO'}\n"
    write_results(args.out, rows, table)
    if not equal:
        sys.exit(1)


if __name__ == "__main__":
    main()
