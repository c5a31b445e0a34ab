"""How often the faster precision modes give the same label as exact fp32, on representative
inputs: a trained model (default: the bundled demo model) on real photographs
(scikit-image's) and on scenes like those it was trained on.

    python benchmarks/agreement.py
    python benchmarks/agreement.py --model path/to/trained/folder --modes bf16 int8

Per mode and image set: the share of label pixels equal to fp32 (mean, and the worst image),
through ``Segmenter`` exactly as ``segment`` runs it (the original's test-time resize). This is
the number the default-precision decision rests on (docs/performance.md).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, machine_text, write_results  # noqa: E402
from end_to_end import RESULTS  # noqa: E402

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "demo-street")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "grass", "gravel", "brick",
          "hubble_deep_field", "retina")


def image_sets(scenes: int) -> dict[str, list[Any]]:
    import numpy as np
    from skimage import data

    from mask2former.data.synthetic import render_scene

    photos = []
    for name in PHOTOS:
        image = getattr(data, name)()
        photos.append(np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3])
    synthetic = [render_scene(np.random.default_rng([7, i]), (512, 1024))[0] for i in range(scenes)]
    return {"photos (scikit-image)": photos, "synthetic street scenes": synthetic}


def main() -> None:
    import numpy as np

    from mask2former import Mask2FormerForUniversalSegmentation, Segmenter

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEMO, help="a trained model folder (default: the demo model)")
    p.add_argument("--modes", nargs="+", default=["bf16", "int8"])
    p.add_argument("--scenes", type=int, default=6, help="synthetic scenes to add to the photos")
    p.add_argument("--out", default=os.path.join(RESULTS, "agreement"))
    a = p.parse_args()
    model = Mask2FormerForUniversalSegmentation.from_pretrained(a.model)
    exact = Segmenter(model, task="semantic", device="cpu")
    rows = []
    for set_name, images in image_sets(a.scenes).items():
        reference = [r.labels for r in exact(images)]
        for mode in a.modes:
            seg = Segmenter(model, task="semantic", device="cpu", precision=mode)
            agree = [float((r.labels == ref).mean()) for r, ref in zip(seg(images), reference)]
            rows.append(dict(model=os.path.basename(a.model.rstrip("/")), images=set_name, count=len(images),
                             mode=mode, ran=seg.precision.path, mean=float(np.mean(agree)), worst=min(agree),
                             per_image=agree, machine=machine()))
            print(f"{set_name}: {mode} ({seg.precision.path}) labels = fp32 on {100 * rows[-1]['mean']:.3f}% "
                  f"(worst image {100 * rows[-1]['worst']:.3f}%)", flush=True)
    lines = [f"Machine: {machine_text(machine())}", "",
             "| model | images | mode | ran as | label pixels = fp32 (mean) | worst image |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['images']} ({r['count']}) | {r['mode']} | {r['ran']} | {100 * r['mean']:.3f}% | "
              f"{100 * r['worst']:.3f}% |" for r in rows]
    write_results(a.out, rows, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
