"""Regenerate the bundled offline demo model (models/demo-street) and example image.

    python scripts/make_demo_model.py [--iterations 600] [--workdir /tmp/m2f-demo]

Trains the reduced "tiny" Mask2Former from scratch with this package's own training pipeline
on the synthetic street-scene generator (fixed seeds), then exports the Hugging Face folder
that `mask2former segment` reads. About 10 minutes on 2 CPU cores. Training and the export
are deterministic on one machine; another CPU may round differently.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np
from PIL import Image

from mask2former.data.synthetic import generate, render_scene
from mask2former.train import TrainConfig, Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--workdir", default="/tmp/m2f-demo")
    p.add_argument("--out", default=os.path.join(REPO, "models", "demo-street"))
    a = p.parse_args()
    data = os.path.join(a.workdir, "data")
    if not os.path.isdir(data):
        generate(data, num_train=400, num_val=40, size=(256, 512), seed=2024)
    cfg = TrainConfig(dataset="folder", data_root=data, architecture="tiny", iterations=a.iterations,
                      batch_size=4, crop_size=(256, 256), base_size=256, max_size=1024, lr=3e-4,
                      backbone_multiplier=1.0, clip_grad=1.0, eval_period=a.iterations, checkpoint_period=200,
                      num_workers=1, seed=7, output_dir=os.path.join(a.workdir, "run"))
    folder = Trainer(cfg).train()
    if os.path.isdir(a.out):
        shutil.rmtree(a.out)
    shutil.copytree(folder, a.out)
    with open(os.path.join(a.out, "metrics.json")) as f:
        print(f"mIoU on the synthetic val split: {json.load(f)['mIoU']:.1f}")
    # A wide street scene, never seen in training (its own seed), as the README's example input.
    image, _, _ = render_scene(np.random.default_rng(99), size=(512, 1024))
    os.makedirs(os.path.join(REPO, "examples"), exist_ok=True)
    Image.fromarray(image).save(os.path.join(REPO, "examples", "street.png"))


if __name__ == "__main__":
    main()
