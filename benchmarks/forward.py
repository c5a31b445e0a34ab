"""Forward pass, ours vs transformers, same weights and input, in one run.

    python benchmarks/forward.py [--archs swin-t swin-l] [--size 512 1024] [--repeats 3]

Each implementation runs in its own process (so peak memory is its own): it loads the
checkpoint, runs one warm-up forward (its memory peak is measured above the loaded model's
resident size), then times ``repeats`` forwards. Prints the ratios ours / transformers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import checkpoint, peak_mb, ratio_row, rss_mb, run_isolated, timed  # noqa: E402


def measure(args: dict) -> dict:
    import torch

    torch.manual_seed(0)
    x = torch.randn(args["batch"], 3, *args["size"])
    if args["impl"] == "ours":
        from mask2former import Mask2FormerForUniversalSegmentation as M
    else:
        from transformers import Mask2FormerForUniversalSegmentation as M
    model = M.from_pretrained(args["folder"]).eval()
    base = rss_mb()
    with torch.inference_mode():
        model(pixel_values=x)
        peak = peak_mb() - base
        times = timed(lambda: model(pixel_values=x), args["repeats"])
    return {"seconds": min(times), "peak_mb": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["swin-t", "swin-l"])
    p.add_argument("--size", nargs=2, type=int, default=[512, 1024])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    rows = []
    for arch in a.archs:
        folder = checkpoint(arch)
        res = {impl: run_isolated(__file__, dict(impl=impl, folder=folder, size=a.size, batch=a.batch,
                                                  repeats=a.repeats)) for impl in ("transformers", "ours")}
        row = ratio_row(res, arch=arch, size=a.size, batch=a.batch)
        rows.append(row)
        print(f"{arch} {a.size[0]}x{a.size[1]} b{a.batch}: time ours/transformers = {row['time_ratio']:.2f} "
              f"({row['ours_s']:.2f}s / {row['transformers_s']:.2f}s), peak memory ratio = "
              f"{row['memory_ratio']:.2f} ({row['ours_peak_mb']:.0f} / {row['transformers_peak_mb']:.0f} MB)")
    print(json.dumps(rows))


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        print(json.dumps(measure(json.loads(sys.argv[1]))))
    else:
        main()
