"""Images/s of ``segment`` over a folder of Cityscapes-sized (1024x2048) PNGs: the old
sequential loop (``--num-workers 0``: decode, forward, write in turn), the overlapped
pipeline (``--num-workers 2``), two torchrun processes, and transformers' obvious loop
(PIL decode, its processor, its model, its semantic post-processing, PNG save) as the
reference, with CPU utilisation, in one run.

    python benchmarks/throughput.py                      # demo model, 8 images
    python benchmarks/throughput.py --model /path/to/checkpoint --images 16

Each mode runs in a fresh process on N images and on 1 image; images/s is (N - 1) over the
difference of the wall times, so start-up and model loading cancel out. CPU utilisation is
the children's user+system time over the same difference, as a fraction of all cores.
With the tiny demo model decoding and PNG encoding are a large share of the work, which is
the case the overlap is for; with Swin-L on a CPU the forward dominates. The machine may be
shared: run once, read the ratios as noisy.

Writes benchmarks/results/throughput.json and .md (or --out).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import table, write_results  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REFERENCE = r"""
import os, sys, numpy as np, torch, transformers
from PIL import Image
model_dir, out, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
proc = transformers.Mask2FormerImageProcessor.from_pretrained(model_dir)
model = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(model_dir).eval()
os.makedirs(out, exist_ok=True)
with torch.inference_mode():
    for p in paths:
        image = Image.open(p).convert("RGB")
        inputs = proc(images=image, return_tensors="pt")
        outputs = model(**inputs)
        labels = proc.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
        Image.fromarray(labels.numpy().astype(np.uint8)).save(os.path.join(out, os.path.basename(p)))
"""


def make_images(folder: str, count: int, seed: int = 0) -> list[str]:
    """Street-like 1024x2048 PNGs with noise (so PNG decoding costs what a photo's does)."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        img = np.zeros((1024, 2048, 3), np.uint8)
        img[:340] = (135, 180, 235)
        img[340:700] = (120, 110, 100)
        img[700:] = (80, 80, 85)
        img = np.clip(img + rng.integers(-25, 25, img.shape), 0, 255).astype(np.uint8)
        paths.append(os.path.join(folder, f"frame_{i:03d}.png"))
        Image.fromarray(img).save(paths[-1])
    return paths


def timed_run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, children's CPU seconds) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ...: {res.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def commands(mode: str, model: str, folder: str, out: str, threads: int, port: int) -> list[str]:
    py = sys.executable
    # Label PNGs only, as the reference loop writes (the overlay doubles the PNG encoding).
    seg = ["segment", folder, "--model", model, "--out", out, "--task", "semantic", "--overwrite", "--no-overlay"]
    if mode == "sequential":
        return [py, "-m", "mask2former.cli", *seg, "--num-workers", "0", "--threads", str(threads)]
    if mode == "overlapped":
        return [py, "-m", "mask2former.cli", *seg, "--num-workers", "2", "--threads", str(threads)]
    if mode == "2 processes":
        return [py, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), "-m",
                "mask2former.cli", *seg, "--num-workers", "2", "--threads", str(max(1, threads // 2))]
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    return [py, "-c", REFERENCE, model, out, *paths]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "demo-street"),
                    help="checkpoint folder both implementations load (default: the demo model)")
    ap.add_argument("--images", type=int, default=8, help="images in the folder (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads of one process; two processes get half each (default: all cores)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "throughput"),
                    help="results path without extension (default: %(default)s)")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(args.threads)}
    cores = os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        many, one = os.path.join(tmp, "many"), os.path.join(tmp, "one")
        make_images(many, args.images)
        make_images(one, 1, seed=1)
        for k, mode in enumerate(["sequential", "overlapped", "2 processes", "transformers loop"]):
            out = os.path.join(tmp, f"out{k}")
            wall_n, cpu_n = timed_run(commands(mode, args.model, many, out, args.threads, 29700 + k), env)
            wall_1, cpu_1 = timed_run(commands(mode, args.model, one, out + "-1", args.threads, 29710 + k), env)
            seconds = max(wall_n - wall_1, 1e-9)
            rows.append({"mode": mode, "images": args.images, "images_per_s": (args.images - 1) / seconds,
                         "cpu_utilisation": (cpu_n - cpu_1) / (seconds * cores), "wall_s": wall_n})
    ref = next(r for r in rows if r["mode"] == "transformers loop")["images_per_s"]
    seq = rows[0]["images_per_s"]
    lines = [f"segment throughput, {args.images} images of 1024x2048, model {os.path.basename(args.model)}, "
             f"{cores} cores, {args.threads} threads (one run; noisy)", ""]
    lines += table(["mode", "images/s", "vs sequential", "vs transformers loop", "CPU utilisation"],
                   [[r["mode"], f"{r['images_per_s']:.2f}", f"{r['images_per_s'] / seq:.2f}x",
                     f"{r['images_per_s'] / ref:.2f}x", f"{100 * r['cpu_utilisation']:.0f}%"] for r in rows])
    write_results(args.out, rows, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
