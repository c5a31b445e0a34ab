"""One training step (forward, loss, backward), ours vs transformers' model + loss, same run.

    python benchmarks/train_step.py [--arch swin-t] [--size 512 512] [--batch 2] [--repeats 3]

Same random-weight checkpoint and the same two crops with the same targets for both; each
implementation runs in its own process so peak memory is its own. Prints ratios ours / theirs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import checkpoint, peak_mb, ratio_row, rss_mb, run_isolated, timed  # noqa: E402


def batch(n: int, size: list[int], num_labels: int):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, *size, generator=g)
    masks, labels = [], []
    for _ in range(n):
        k = 5
        ids = torch.randint(0, k, (size[0] // 16, size[1] // 16), generator=g)
        ids = torch.nn.functional.interpolate(ids[None, None].float(), size=size, mode="nearest")[0, 0].long()
        masks.append(torch.stack([(ids == i).float() for i in range(k)]))
        labels.append(torch.randperm(num_labels, generator=g)[:k])
    return x, masks, labels


def measure(args: dict) -> dict:

    x, masks, labels = batch(args["batch"], args["size"], 19)
    if args["impl"] == "ours":
        from mask2former import Mask2FormerForUniversalSegmentation
        from mask2former.criterion import build_criterion

        model = Mask2FormerForUniversalSegmentation.from_pretrained(args["folder"]).train()
        model.criterion = build_criterion(model.config)
    else:
        from transformers import Mask2FormerForUniversalSegmentation

        model = Mask2FormerForUniversalSegmentation.from_pretrained(args["folder"]).train()

    def step():
        model.zero_grad(set_to_none=True)
        out = model(pixel_values=x, mask_labels=masks, class_labels=labels)
        out.loss.backward()

    base = rss_mb()
    step()
    peak = peak_mb() - base
    return {"seconds": min(timed(step, args["repeats"])), "peak_mb": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="swin-t")
    p.add_argument("--size", nargs=2, type=int, default=[512, 512])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    folder = checkpoint(a.arch)
    res = {impl: run_isolated(__file__, dict(impl=impl, folder=folder, size=a.size, batch=a.batch, repeats=a.repeats))
           for impl in ("transformers", "ours")}
    row = ratio_row(res, arch=a.arch, size=a.size, batch=a.batch)
    print(f"train step {a.arch} {a.batch}x{a.size[0]}x{a.size[1]}: time ours/transformers = {row['time_ratio']:.2f} "
          f"({row['ours_s']:.2f}s / {row['transformers_s']:.2f}s), peak memory ratio = {row['memory_ratio']:.2f}")
    print(json.dumps(row))


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        print(json.dumps(measure(json.loads(sys.argv[1]))))
    else:
        main()
