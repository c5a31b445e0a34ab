"""Convert an original Mask2Former checkpoint (``.pkl`` / ``.pth``) to a Hugging Face folder.

    python -m mask2former.checkpoint.convert model_final_xxx.pkl out_dir [--id2label names.json]

The folder holds ``config.json`` + ``model.safetensors`` under ``transformers``' names (so both
this package and ``transformers.Mask2FormerForUniversalSegmentation`` load it) and a
``preprocessor_config.json`` with the original's test-time resize and normalisation.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Optional, Sequence

from ..config import Mask2FormerConfig, SwinConfig
from ..io import atomic_write_text
from .labels import dataset_for

# The original's INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST per dataset (configs/*/Base-*.yaml;
# COCO keeps detectron2's defaults).
_TEST_SIZES = {
    "cityscapes": (1024, 2048),
    "cityscapes_instance": (1024, 2048),
    "coco_panoptic": (800, 1333),
    "coco_instance": (800, 1333),
    "ade20k": (512, 2048),
    "ade20k_instance": (640, 2560),
    "mapillary_vistas": (2048, 2048),
}


def preprocessor_config(config: Mask2FormerConfig) -> dict[str, Any]:
    """``Mask2FormerImageProcessor`` settings matching the original's test-time input pipeline.

    Resize: the shorter side to MIN_SIZE_TEST, the longer capped at MAX_SIZE_TEST; the dataset
    is told by the class count. ADE20K's 150 classes are ambiguous: semantic R50/Swin-T/S models
    test at 512, while the window-12 (Swin-B/L 384) and all panoptic models test at 640; this
    picks 640 for window-12 backbones and 512 otherwise. Unknown datasets get COCO's sizes.
    """
    d = dataset_for(config.num_labels)
    shortest, longest = _TEST_SIZES.get(d.key if d else "", (800, 1333))
    bb = config.backbone_config
    if d is not None and d.key == "ade20k" and isinstance(bb, SwinConfig) and bb.window_size == 12:
        shortest, longest = 640, 2560
    return {
        "image_processor_type": "Mask2FormerImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": shortest, "longest_edge": longest},
        "resample": 2,  # bilinear, as detectron2's ResizeShortestEdge
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        # The original's PIXEL_MEAN / PIXEL_STD (123.675, 116.28, 103.53 / 58.395, 57.12, 57.375) over 255.
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "size_divisor": 32,
        "ignore_index": config.ignore_value,
        "do_reduce_labels": False,
        "num_labels": config.num_labels,
    }


def convert(pkl_path: str | os.PathLike, out_dir: str | os.PathLike, id2label: Any = None,
            write_preprocessor: bool = True) -> str:
    """Read an original checkpoint, check it loads strictly, and write a Hugging Face folder.

    Returns ``out_dir``. ``id2label`` (mapping or list of names) overrides the class names.
    """
    from . import is_detectron2_checkpoint, load_model

    source = os.fspath(pkl_path)
    if not is_detectron2_checkpoint(source):
        raise ValueError(f"{source}: expected an existing .pkl or .pth file of the original Mask2Former")
    model = load_model(source, id2label=id2label)
    out = os.fspath(out_dir)
    model.save_pretrained(out)
    if write_preprocessor:
        text = json.dumps(preprocessor_config(model.config), indent=2, sort_keys=True) + "\n"
        atomic_write_text(os.path.join(out, "preprocessor_config.json"), text)
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="original model_final_*.pkl or .pth")
    parser.add_argument("out_dir", help="folder to write config.json, model.safetensors, preprocessor_config.json")
    parser.add_argument("--id2label", help="JSON file: a list of class names or {id: name}")
    parser.add_argument("--no-preprocessor", action="store_true", help="do not write preprocessor_config.json")
    args = parser.parse_args(argv)
    id2label = None
    if args.id2label:
        with open(args.id2label, encoding="utf-8") as f:
            id2label = json.load(f)
    out = convert(args.checkpoint, args.out_dir, id2label, write_preprocessor=not args.no_preprocessor)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
