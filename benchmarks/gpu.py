"""The prepared GPU measurement: run it whenever a CUDA machine is available (a few minutes).

    python benchmarks/gpu.py                 # everything below, results in benchmarks/results/gpu.*
    python benchmarks/gpu.py --quick         # Swin-T only, fewer repeats (smoke run)

On one CUDA device, with random-weight checkpoints written by transformers (same weights and
inputs for both implementations):

1. parity: our logits against transformers' on a padded batch of two (fp32, TF32 off), and the
   label agreement of our bf16 / fp16 autocast modes with our fp32;
2. the end-to-end matrix: image file -> label map (decode, processor, network, the original's
   post-processing), ours vs transformers, Swin-T / Swin-L x 512x1024 / 1024x2048 x batch 1 / 4,
   time and peak CUDA memory ratios, both alternating in one process;
3. throughput: images/s at batch 1 and 8 for Swin-T and Swin-L at 1024x2048, our fp32 / bf16 /
   fp16, with and without ``torch.compile`` of the backbone.

Without CUDA it says so and writes nothing: the README's GPU rows stay "not measured".
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import checkpoint, write_results  # noqa: E402
from end_to_end import make_images  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def sync_seconds(fn: Callable[[], Any]) -> float:
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def ours(folder: str, precision: str = "fp32", compile: bool = False) -> Any:
    from mask2former import Segmenter
    from mask2former.processor import Mask2FormerImageProcessor

    return Segmenter(folder, task="semantic", device="cuda", resize="config", precision=precision,
                     processor=Mask2FormerImageProcessor(do_resize=False), compile=compile)


def transformers_run(folder: str) -> Callable[[list[str]], list[Any]]:
    import torch
    import transformers
    from PIL import Image

    transformers.logging.set_verbosity_error()
    model = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(folder).cuda().eval()
    proc = transformers.Mask2FormerImageProcessor(do_resize=False)

    @torch.inference_mode()
    def run(paths: list[str]) -> list[Any]:
        images = [Image.open(p).convert("RGB") for p in paths]
        inputs = proc(images=images, return_tensors="pt")
        out = model(pixel_values=inputs["pixel_values"].cuda(), pixel_mask=inputs["pixel_mask"].cuda())
        sizes = [(im.height, im.width) for im in images]
        return [m.cpu().numpy() for m in proc.post_process_semantic_segmentation(out, target_sizes=sizes)]

    run.model = model  # type: ignore[attr-defined]
    return run


def agreement(a: list[Any], b: list[Any]) -> float:
    import numpy as np

    return float(np.mean([(x == y).mean() for x, y in zip(a, b)]))


def parity(folder: str) -> dict[str, Any]:
    import torch

    from mask2former import Mask2FormerForUniversalSegmentation

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    ref = transformers_run(folder).model  # type: ignore[attr-defined]
    net = Mask2FormerForUniversalSegmentation.from_pretrained(folder).cuda().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(2, 3, 512, 1024)
    x[0] = torch.randn(3, 512, 1024, generator=g)
    x[1, :, :480, :960] = torch.randn(3, 480, 960, generator=g)
    with torch.inference_mode():
        a, b = net(pixel_values=x.cuda()), ref(pixel_values=x.cuda())
    return {"class_max_abs_diff": (a.class_queries_logits - b.class_queries_logits).abs().max().item(),
            "mask_max_abs_diff": (a.masks_queries_logits - b.masks_queries_logits).abs().max().item()}


def end_to_end(folder: str, paths: list[str], repeats: int) -> dict[str, Any]:
    import torch

    seg, ref = ours(folder), transformers_run(folder)
    runs = {"ours": lambda: [r.labels for r in seg(paths, batch_size=len(paths))], "transformers": lambda: ref(paths)}
    labels = {k: f() for k, f in runs.items()}  # warm-up
    best = {k: float("inf") for k in runs}
    peak = {}
    for _ in range(repeats):
        for k, f in runs.items():
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            best[k] = min(best[k], sync_seconds(f))
            peak[k] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return {"ours_s": best["ours"], "transformers_s": best["transformers"],
            "time_ratio": best["ours"] / best["transformers"], "ours_peak_mb": peak["ours"],
            "transformers_peak_mb": peak["transformers"], "memory_ratio": peak["ours"] / max(peak["transformers"], 1e-9),
            "labels_equal": agreement(labels["ours"], labels["transformers"])}


def throughput(folder: str, paths: list[str], precision: str, compile: bool, repeats: int,
               reference: list[Any]) -> dict[str, Any]:
    seg = ours(folder, precision, compile)
    labels = [r.labels for r in seg(paths, batch_size=len(paths))]  # warm-up (and compilation)
    best = min(sync_seconds(lambda: seg(paths, batch_size=len(paths))) for _ in range(repeats))
    return {"images_per_s": len(paths) / best, "seconds": best, "labels_equal_vs_fp32": agreement(labels, reference),
            "precision_used": seg.precision.used}


def markdown(device: str, rows: dict[str, Any]) -> str:
    lines = [f"GPU: {device}", "", "| parity (fp32, TF32 off) | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3g} |" for k, v in rows["parity"].items()]
    lines += ["", "| model | input | batch | time ours / transformers | peak CUDA memory ours / transformers | labels equal |",
              "|---|---|---|---|---|---|"]
    for r in rows["end_to_end"]:
        lines.append(f"| {r['arch']} | {r['size']} | {r['batch']} | **{r['time_ratio']:.2f}** ({r['ours_s']:.3f} s / "
                     f"{r['transformers_s']:.3f} s) | **{r['memory_ratio']:.2f}** ({r['ours_peak_mb']:.0f} MB / "
                     f"{r['transformers_peak_mb']:.0f} MB) | {100 * r['labels_equal']:.3f}% |")
    lines += ["", "| model | batch | precision | compile | images/s | labels equal vs our fp32 |", "|---|---|---|---|---|---|"]
    for r in rows["throughput"]:
        lines.append(f"| {r['arch']} | {r['batch']} | {r['precision_used']} | {r['compile']} | {r['images_per_s']:.2f} "
                     f"| {100 * r['labels_equal_vs_fp32']:.3f}% |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="Swin-T only, one repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--out", default=os.path.join(RESULTS, "gpu"), help="output path without extension")
    a = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: nothing measured (the README's GPU rows stay 'not measured')")
        return 0
    archs = ["swin-t"] if a.quick else ["swin-t", "swin-l"]
    repeats = 1 if a.quick else a.repeats
    images = os.path.join(tempfile.gettempdir(), "m2f-bench-images")
    os.makedirs(images, exist_ok=True)
    device = torch.cuda.get_device_name(0)
    rows: dict[str, Any] = {"device": device, "parity": parity(checkpoint("swin-t")), "end_to_end": [], "throughput": []}
    print("parity", rows["parity"], flush=True)
    for arch in archs:
        folder = checkpoint(arch)
        for size in ((512, 1024), (1024, 2048)):
            for batch in (1, 4):
                r = end_to_end(folder, make_images(size, batch, images), repeats)
                rows["end_to_end"].append(dict(arch=arch, size=f"{size[0]}x{size[1]}", batch=batch, **r))
                print(rows["end_to_end"][-1], flush=True)
        for batch in (1, 8):
            paths = make_images((1024, 2048), batch, images)
            reference = [r.labels for r in ours(folder)(paths, batch_size=batch)]
            for precision in ("fp32", "bf16", "fp16"):
                for compile in ((False,) if a.no_compile else (False, True)):
                    r = throughput(folder, paths, precision, compile, repeats, reference)
                    rows["throughput"].append(dict(arch=arch, batch=batch, compile=compile, **r))
                    print(rows["throughput"][-1], flush=True)
    write_results(a.out, [rows], markdown(device, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
