"""The model card's snippet, with only its import line changed, runs end to end.

The hub id resolves through huggingface_hub's real cache (offline): a random-weight folder
with the card's architecture is laid out as the cached snapshot of that repository. The card
downloads a COCO photo with ``requests``; with no network here, ``requests.get`` returns a
real photograph from scikit-image's test data instead.
"""
from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

from hf_models import SMALL_SWIN, SWIN_L, hf_model

REPO = "facebook/mask2former-swin-large-cityscapes-semantic"
CITYSCAPES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
              "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]

# Verbatim from the model card, except the import line.
SNIPPET = '''
import requests
import torch
from PIL import Image
from mask2former import AutoImageProcessor, Mask2FormerForUniversalSegmentation


# load Mask2Former fine-tuned on Cityscapes semantic segmentation
processor = AutoImageProcessor.from_pretrained("facebook/mask2former-swin-large-cityscapes-semantic")
model = Mask2FormerForUniversalSegmentation.from_pretrained("facebook/mask2former-swin-large-cityscapes-semantic")

url = "http://images.cocodataset.org/val2017/000000039769.jpg"
image = Image.open(requests.get(url, stream=True).raw)
inputs = processor(images=image, return_tensors="pt")

with torch.no_grad():
    outputs = model(**inputs)

# model predicts class_queries_logits of shape `(batch_size, num_queries)`
# and masks_queries_logits of shape `(batch_size, num_queries, height, width)`
class_queries_logits = outputs.class_queries_logits
masks_queries_logits = outputs.masks_queries_logits

# you can pass them to processor for postprocessing
predicted_semantic_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
# we refer to the demo notebooks for visualization (see "Resources" section in the Mask2Former docs)
'''

# The hub's preprocessor_config.json of this checkpoint (a fixed 384x384 resize).
HUB_PREPROCESSOR = {"do_normalize": True, "do_resize": True, "ignore_index": 255, "image_mean": [0.485, 0.456, 0.406],
                    "image_std": [0.229, 0.224, 0.225], "num_labels": 19, "reduce_labels": False, "resample": 2,
                    "size": {"height": 384, "width": 384}, "size_divisor": 32,
                    "image_processor_type": "Mask2FormerImageProcessor"}


def cache_snapshot(cache, model) -> None:
    repo = cache / ("models--" + REPO.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    model.save_pretrained(snapshot)
    (snapshot / "preprocessor_config.json").write_text(json.dumps(HUB_PREPROCESSOR))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


class _Response:
    def __init__(self, data: bytes):
        self.raw = io.BytesIO(data)


def run_snippet(tmp_path, monkeypatch, backbone) -> dict:
    import huggingface_hub.constants
    import requests
    import skimage.data

    cache_snapshot(tmp_path, hf_model("swin", backbone, num_labels=19))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    photo = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(photo, format="JPEG")
    monkeypatch.setattr(requests, "get", lambda url, stream=False: _Response(photo.getvalue()))
    scope: dict = {}
    exec(compile(SNIPPET, "model-card-snippet", "exec"), scope)
    return scope


def check(scope) -> None:
    outputs, image = scope["outputs"], scope["image"]
    assert scope["class_queries_logits"].shape == (1, 100, 20)
    assert scope["masks_queries_logits"].shape == (1, 100, 96, 96)
    semantic = scope["predicted_semantic_map"]
    assert semantic.shape == (image.size[1], image.size[0])
    assert semantic.dtype == torch.int64 and 0 <= semantic.min() and semantic.max() < 19
    assert outputs.pixel_mask.shape == (1, 384, 384)


def test_card_snippet_small_swin(tmp_path, monkeypatch):
    check(run_snippet(tmp_path, monkeypatch, SMALL_SWIN))


@pytest.mark.slow
def test_card_snippet_swin_large(tmp_path, monkeypatch):
    scope = run_snippet(tmp_path, monkeypatch, SWIN_L)
    check(scope)
    assert scope["model"].config.backbone_config.window_size == 12
