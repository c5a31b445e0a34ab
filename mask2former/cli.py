"""The ``mask2former`` command line: a thin shell over the Python API."""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from .config import Mask2FormerConfig, ResNetConfig, SwinConfig

DEFAULT_MODEL = "facebook/mask2former-swin-large-cityscapes-semantic"


def describe_backbone(cfg: Mask2FormerConfig) -> str:
    bb = cfg.backbone_config
    if isinstance(bb, SwinConfig):
        sizes = {96: "T" if sum(bb.depths) == 12 else "S", 128: "B", 192: "L"}
        name = f"Swin-{sizes.get(bb.embed_dim, '?')}"
        depths = "-".join(map(str, bb.depths))
        return f"{name} (embed dim {bb.embed_dim}, depths {depths}, window {bb.window_size}, pretrain {bb.image_size})"
    if isinstance(bb, ResNetConfig):
        depth = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}.get(tuple(bb.depths))
        return f"ResNet-{depth or '?'} (depths {'-'.join(map(str, bb.depths))})"
    return type(bb).__name__


def cmd_info(args: argparse.Namespace) -> int:
    from .model import Mask2FormerForUniversalSegmentation

    model = Mask2FormerForUniversalSegmentation.from_pretrained(args.model)
    cfg = model.config
    names = [cfg.id2label[i] for i in sorted(cfg.id2label)]
    shown = ", ".join(names[:30]) + (f", ... ({len(names) - 30} more)" if len(names) > 30 else "")
    print(f"model:          {args.model}")
    print(f"loaded from:    {getattr(model, 'source', args.model)}")
    print(f"backbone:       {describe_backbone(cfg)}")
    print(f"pixel decoder:  MSDeformAttn, {cfg.encoder_layers} layers, {cfg.feature_size} channels")
    print(f"decoder:        {cfg.decoder_layers - 1} masked-attention layers, {cfg.num_queries} queries, "
          f"hidden {cfg.hidden_dim}, {cfg.num_attention_heads} heads")
    print(f"classes:        {cfg.num_labels}: {shown}")
    print(f"parameters:     {model.num_parameters():,}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint.convert import convert

    convert(args.checkpoint, args.out_dir)
    print(f"wrote {args.out_dir} (config.json, model.safetensors)")
    return 0


TRAIN_FLAGS = {  # flag -> TrainConfig field, for the options people change most
    "dataset": str, "data_root": str, "task": str, "architecture": str, "init": str, "backbone_weights": str,
    "iterations": int, "batch_size": int, "accumulate": int, "lr": float, "base_size": int,
    "eval_period": int, "checkpoint_period": int, "output_dir": str, "num_workers": int, "seed": int,
    "device": str, "on_nan": str,
}


def cmd_train(args: argparse.Namespace) -> int:
    import yaml

    from .train import TrainConfig, Trainer
    from .train.trainer import NonFiniteLossError

    data = {}
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    for name in TRAIN_FLAGS:
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    if args.crop_size:
        data["crop_size"] = args.crop_size
    for item in args.set or []:
        key, _, value = item.partition("=")
        data[key] = yaml.safe_load(value)
    cfg = TrainConfig.from_dict(data)
    try:
        folder = Trainer(cfg, resume=args.resume).train()
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if folder:
        print(f"model saved to {folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mask2former", description="Mask2Former segmentation")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a checkpoint: architecture, classes, size, origin")
    info.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="folder, hub id or .pkl")
    info.set_defaults(func=cmd_info)

    conv = sub.add_parser("convert", help="convert an original detectron2 .pkl to a Hugging Face folder")
    conv.add_argument("checkpoint", help="model_final_*.pkl of the original model zoo")
    conv.add_argument("out_dir")
    conv.set_defaults(func=cmd_convert)
    from .commands import evaluate, export, segment

    segment.add_parser(sub, DEFAULT_MODEL)
    evaluate.add_parser(sub, DEFAULT_MODEL)
    export.add_parser(sub, DEFAULT_MODEL)

    train = sub.add_parser("train", help="train or fine-tune (single process, or under torchrun)")
    train.add_argument("--config", help="YAML file of TrainConfig fields")
    for name, kind in TRAIN_FLAGS.items():
        train.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    train.add_argument("--crop-size", type=int, nargs=2, metavar=("H", "W"))
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other TrainConfig field")
    train.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint.pth")
    train.set_defaults(func=cmd_train)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as e:
        # Checkpoint and input problems carry a one-line message that names the file.
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
