"""Optional precision modes against exact fp32: speed and agreement of the label maps.

    python benchmarks/precision.py                                  # swin-t + models/demo-street
    python benchmarks/precision.py --models swin-l --sizes 1024x2048 --modes fp32 bf16 int8

For each model (``swin-t``/``swin-l``: the random-weight benchmark checkpoints; anything else:
a model folder) and image size, ``Segmenter(precision=mode)`` segments the same synthetic
street scenes; modes alternate, ``--repeats`` times, in one process. Reported per mode:
what actually ran (``Segmenter.precision.path``; unavailable modes fall back to fp32),
seconds per call (fastest), speed-up over fp32, the share of label pixels identical to fp32,
and the share of final mask decisions (query x pixel, logit > 0) identical to fp32. Random
weights tend to paint one class everywhere, which makes label agreement trivially high; the
mask decisions show their disagreement too, and a trained model gives the realistic number.

Writes benchmarks/results/precision.json and .md (or --out).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ARCHS, checkpoint, size_arg, write_results  # noqa: E402
from end_to_end import RESULTS, make_images  # noqa: E402

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "demo-street")


def measure(model_dir: str, paths: list[str], modes: list[str], repeats: int) -> list[dict[str, Any]]:
    import numpy as np
    import torch

    from mask2former import Mask2FormerForUniversalSegmentation
    from mask2former.image_io import to_rgb_array
    from mask2former.processor import Mask2FormerImageProcessor
    from mask2former.segmenter import Segmenter

    model = Mask2FormerForUniversalSegmentation.from_pretrained(model_dir)
    segs = {m: Segmenter(model, task="semantic", device="cpu", resize="config",
                         processor=Mask2FormerImageProcessor(do_resize=False), precision=m,
                         num_threads=torch.get_num_threads()) for m in modes}
    labels = {m: [r.labels for r in seg(paths, batch_size=len(paths))] for m, seg in segs.items()}  # warm-up
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(repeats):
        for m, seg in segs.items():
            t = time.perf_counter()
            seg(paths, batch_size=len(paths))
            times[m].append(time.perf_counter() - t)
    # Final mask decisions on the first image, through each mode's own network and context.
    x = segs[modes[0]]._tensor(to_rgb_array(paths[0]))
    decisions = {}
    for m, seg in segs.items():
        with torch.inference_mode(), seg._inference():
            decisions[m] = seg.model(pixel_values=x[None]).masks_queries_logits.float() > 0
    ref = "fp32" if "fp32" in modes else modes[0]
    rows = []
    for m, seg in segs.items():
        agree = float(np.mean([(a == b).mean() for a, b in zip(labels[m], labels[ref])]))
        rows.append(dict(mode=m, ran=seg.precision.used, path=seg.precision.path, note=seg.precision.message,
                         seconds=min(times[m]), all_seconds=times[m], speedup=min(times[ref]) / min(times[m]),
                         label_agreement=agree, mask_agreement=float((decisions[m] == decisions[ref]).float().mean()),
                         classes_in_labels=int(len(np.unique(labels[ref][0])))))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | size | batch | mode | ran as | s/call | speed-up vs fp32 | label pixels = fp32 | "
             "mask decisions = fp32 |", "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['model']} | {r['size'][0]}x{r['size'][1]} | {r['batch']} | {r['mode']} | {r['path']} | "
                     f"{r['seconds']:.2f} | **{r['speedup']:.2f}x** | {100 * r['label_agreement']:.3f}% | "
                     f"{100 * r['mask_agreement']:.2f}% |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["swin-t"] + ([DEMO] if os.path.isdir(DEMO) else []),
                   help="swin-t, swin-l (random-weight checkpoints) or model folders")
    p.add_argument("--sizes", nargs="+", type=size_arg, default=["512x1024"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--modes", nargs="+", default=["fp32", "bf16", "int8"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=os.path.join(RESULTS, "precision"))
    a = p.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    images = os.path.join(tempfile.gettempdir(), "m2f-bench-images")
    os.makedirs(images, exist_ok=True)
    rows = []
    for name in a.models:
        folder = checkpoint(name) if name in ARCHS else name
        for size_text in a.sizes:
            size = [int(v) for v in size_text.lower().split("x")]
            for r in measure(folder, make_images(tuple(size), a.batch, images), a.modes, a.repeats):
                rows.append(dict(model=os.path.basename(name.rstrip("/")), size=size, batch=a.batch, **r))
                print(f"{rows[-1]['model']} {size[0]}x{size[1]} {r['mode']} ({r['path']}): {r['seconds']:.2f}s, "
                      f"{r['speedup']:.2f}x, labels {100 * r['label_agreement']:.3f}% = fp32, mask decisions "
                      f"{100 * r['mask_agreement']:.2f}%" + (f" [{r['note']}]" if r["note"] else ""), flush=True)
    write_results(a.out, rows, markdown(rows))


if __name__ == "__main__":
    main()
