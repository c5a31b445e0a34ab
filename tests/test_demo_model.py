"""The bundled demo model still loads and reaches its stated mIoU on freshly generated scenes;
and training from scratch with the pipeline gets a small model to mIoU >= 0.8."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mask2former import Segmenter
from mask2former.data.synthetic import generate, render_scene
from mask2former.evaluation import SemanticEvaluator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "models", "demo-street")


def miou_on_fresh_scenes(model, n: int, seed: int, size=(256, 512)) -> float:
    seg = Segmenter(model, task="semantic", device="cpu")
    ev = SemanticEvaluator(len(seg.info.id2label))
    for i in range(n):
        image, label, _ = render_scene(np.random.default_rng([seed, i]), size=size)
        ev.update(seg(image).labels, label.astype(np.int64))
    return ev.compute()["mIoU"]


def test_demo_model_reaches_its_stated_miou():
    with open(os.path.join(DEMO, "metrics.json")) as f:
        stated = json.load(f)["mIoU"]
    assert stated >= 80
    # Scenes no training or validation image came from (another seed than the generator's).
    assert miou_on_fresh_scenes(DEMO, 12, seed=31337) >= stated - 5


def test_demo_example_image_is_bundled():
    from PIL import Image

    with Image.open(os.path.join(REPO, "examples", "street.png")) as im:
        assert im.size == (1024, 512) and im.mode == "RGB"


@pytest.mark.slow
def test_training_from_scratch_reaches_08_miou(tmp_path):
    from mask2former.train import TrainConfig, Trainer

    generate(tmp_path / "data", num_train=120, num_val=10, size=(256, 256), seed=5)
    cfg = TrainConfig(dataset="folder", data_root=str(tmp_path / "data"), architecture="tiny", iterations=250,
                      batch_size=4, crop_size=(256, 256), base_size=256, max_size=1024, lr=3e-4,
                      backbone_multiplier=1.0, clip_grad=1.0, eval_period=0, checkpoint_period=1000,
                      num_workers=0, seed=0, output_dir=str(tmp_path / "run"))
    folder = Trainer(cfg).train()
    assert miou_on_fresh_scenes(folder, 20, seed=4242, size=(256, 256)) >= 80
