"""Every entry point gives the original's result for the same model: the card's snippet and
``Segmenter`` (the original's order of semantic post-processing for the checkpoint's task),
and validation during training and ``evaluate`` on the exported model."""
from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mask2former import AutoImageProcessor, Mask2FormerForUniversalSegmentation, Segmenter
from mask2former.cli import main as cli_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "models", "demo-street")


def photos() -> list[Image.Image]:
    from skimage import data

    return [Image.fromarray(getattr(data, name)()).convert("RGB") for name in ("astronaut", "coffee", "chelsea")]


def card_snippet(folder: str, image: Image.Image) -> np.ndarray:
    processor = AutoImageProcessor.from_pretrained(folder)
    model = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    return processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0].numpy()


def test_card_snippet_and_segmenter_give_the_same_map():
    """A semantic-only checkpoint: both combine class and mask probabilities at the padded
    input size, then crop and resize, as the original. (resize="config": the processor's own
    resize, which is what the snippet runs; Segmenter's default is the original's rounding.)"""
    assert AutoImageProcessor.from_pretrained(DEMO).semantic_resize_first is False
    seg = Segmenter(DEMO, device="cpu", resize="config")
    assert seg.semantic_resize_first is False
    differs_from_other_order = 0
    for image in photos():
        ours = seg(image).labels
        assert np.array_equal(card_snippet(DEMO, image), ours)
        proc = seg.processor
        inputs = proc(images=image)
        with torch.no_grad():
            out = seg.model(**inputs)
        other = proc.post_process_semantic_segmentation(out, target_sizes=[image.size[::-1]],
                                                        resize_before_inference=True)[0].numpy()
        differs_from_other_order += int((other != ours).sum())
    assert differs_from_other_order > 0  # the order matters on these photos: the test can fail


@pytest.mark.parametrize("name,extra,num_labels,resize_first", [
    ("mask2former-tiny-coco-panoptic", {}, 7, True),     # the name says the task
    ("tiny", {"task": "instance"}, 7, True),            # our trained models record it
    ("tiny", {}, 133, True),                             # COCO panoptic's class count
    ("tiny", {}, 19, False),                             # Cityscapes semantic
    ("tiny-cityscapes-semantic", {}, 19, False),
    ("tiny", {}, 7, False),                              # nothing says: semantic, for both entry points
])
def test_processor_order_follows_the_checkpoint(tmp_path, name, extra, num_labels, resize_first):
    from mask2former.train.model_init import architecture_config

    cfg = architecture_config("tiny", {i: f"c{i}" for i in range(num_labels)}, {"num_queries": 4})
    cfg.extra.update(extra)
    folder = tmp_path / name
    Mask2FormerForUniversalSegmentation(cfg).save_pretrained(folder)
    AutoImageProcessor.from_pretrained(DEMO).save_pretrained(folder)
    proc = AutoImageProcessor.from_pretrained(folder)
    assert proc.semantic_resize_first is resize_first
    assert Segmenter(str(folder), device="cpu").semantic_resize_first is resize_first
    assert "semantic_resize_first" not in json.loads(proc.to_json_string())  # not a config key


def test_validation_during_training_equals_evaluate(tmp_path):
    """The same mIoU from the trainer's validation and from `evaluate` on the exported model.
    Base size 45 on 64x96 images: 67.5 px wide, where the original's rounding (68) and the
    processor's truncation (67) differ, so a validation that resized otherwise would show."""
    from mask2former.data.synthetic import generate
    from mask2former.train import TrainConfig, Trainer

    root = tmp_path / "data"
    generate(root, num_train=8, num_val=3, size=(64, 96), seed=5)
    cfg = TrainConfig.from_dict(dict(
        dataset="folder", data_root=str(root), architecture="tiny", iterations=4, batch_size=2, crop_size=(64, 64),
        base_size=45, max_size=128, eval_period=4, num_workers=0, checkpoint_period=100, log_period=1,
        output_dir=str(tmp_path / "run"), seed=1, lr=3e-4,
        model_overrides={"num_queries": 8, "decoder_layers": 3, "encoder_layers": 1, "train_num_points": 256}))
    folder = Trainer(cfg).train()
    validated = json.loads((tmp_path / "run" / "model" / "metrics.json").read_text())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["evaluate", "--model", folder, "--dataset", "folder", "--data-root", str(root),
                         "--split", "val", "--device", "cpu", "--json"])
    assert code == 0
    evaluated = json.loads(out.getvalue().strip().splitlines()[-1])
    assert evaluated["mIoU"] == pytest.approx(validated["mIoU"], abs=1e-9)
    assert 0 < evaluated["mIoU"] < 100
