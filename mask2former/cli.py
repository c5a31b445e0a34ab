"""The ``mask2former`` command line: a thin shell over the Python API."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Optional

from .config import Mask2FormerConfig, ResNetConfig, SwinConfig

if TYPE_CHECKING:
    from .train.config import TrainConfig

DEFAULT_MODEL = "facebook/mask2former-swin-large-cityscapes-semantic"


def describe_backbone(cfg: Mask2FormerConfig) -> str:
    bb = cfg.backbone_config
    if isinstance(bb, SwinConfig):
        named = {(96, (2, 2, 6, 2)): "Swin-T", (96, (2, 2, 18, 2)): "Swin-S", (128, (2, 2, 18, 2)): "Swin-B",
                 (192, (2, 2, 18, 2)): "Swin-L"}
        depths = "-".join(map(str, bb.depths))
        details = f"embed dim {bb.embed_dim}, depths {depths}, window {bb.window_size}, pretrain {bb.image_size}"
        name = named.get((bb.embed_dim, tuple(bb.depths)))
        return f"{name} ({details})" if name else f"Swin (custom: {details})"
    if isinstance(bb, ResNetConfig):
        depth = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}.get(tuple(bb.depths))
        depths = "-".join(map(str, bb.depths))
        return f"ResNet-{depth} (depths {depths})" if depth else f"ResNet (custom: depths {depths})"
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


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    from .train.config import ARCHITECTURES, DATASETS, FIELD_HELP, TASKS, TrainConfig

    defaults = TrainConfig()
    choices = {"dataset": DATASETS, "task": TASKS, "architecture": ARCHITECTURES, "on_nan": ("stop", "skip")}
    train = sub.add_parser("train", help="train or fine-tune (single process, or under torchrun)",
                           description="Train with the paper's recipe. Flags override --config; --set sets any "
                                       "other TrainConfig field (all of them: docs/training.md).")
    train.add_argument("--config", metavar="YAML", help="YAML file of TrainConfig fields (default: none)")
    for name, kind in TRAIN_FLAGS.items():
        default = getattr(defaults, name)
        shown = {"data_root": "none, required", "device": "cuda when available, else cpu; under torchrun each "
                 "process's own GPU"}.get(name, "none" if default is None else default)
        train.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, choices=choices.get(name),
                           help=f"{FIELD_HELP[name]} (default: {shown})".replace("%", "%%"))
    train.add_argument("--crop-size", type=int, nargs=2, metavar=("H", "W"),
                       help=f"{FIELD_HELP['crop_size']} (default: {' '.join(map(str, defaults.crop_size))})")
    train.add_argument("--check-data", action="store_true", default=None,
                       help="read and check every training image and label before starting; a sample is always "
                            "checked (default: off)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="any other TrainConfig field, e.g. --set warmup_iters=1500 (repeatable)")
    train.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint.pth")
    train.set_defaults(func=cmd_train)


def train_config(args: argparse.Namespace) -> "TrainConfig":
    """--config, then the flags, then --set, as one TrainConfig (type errors name the field)."""
    import yaml

    from .train.config import TrainConfig, read_config_file

    data = {}
    if args.config:
        TrainConfig.from_yaml(args.config)  # the file's own values checked first: errors name the file
        data = read_config_file(args.config)
    for name in (*TRAIN_FLAGS, "check_data"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    if args.crop_size:
        data["crop_size"] = args.crop_size
    for item in args.set or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--set {item}: expected KEY=VALUE")
        try:
            data[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            data[key.strip()] = value
    return TrainConfig.from_dict(data)


def cmd_train(args: argparse.Namespace) -> int:
    from .train import Trainer
    from .train.trainer import NonFiniteLossError

    cfg = train_config(args)
    try:
        folder = Trainer(cfg, resume=args.resume).train()
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if folder:
        print(f"model saved to {folder}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="mask2former", description="Mask2Former segmentation")
    p.add_argument("--version", action="version", version=f"mask2former {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a checkpoint: architecture, classes, size, origin")
    info.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                      help="HF folder, hub id or original .pkl (default: %(default)s)")
    info.set_defaults(func=cmd_info)

    conv = sub.add_parser("convert", help="convert an original detectron2 .pkl to a Hugging Face folder")
    conv.add_argument("checkpoint", help="model_final_*.pkl of the original model zoo (required)")
    conv.add_argument("out_dir", help="folder to write config.json and model.safetensors to (required)")
    conv.set_defaults(func=cmd_convert)
    from .commands import evaluate, export, segment, serve

    segment.add_parser(sub, DEFAULT_MODEL)
    evaluate.add_parser(sub, DEFAULT_MODEL)
    serve.add_parser(sub, DEFAULT_MODEL)
    export.add_parser(sub, DEFAULT_MODEL)

    add_train_parser(sub)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as e:
        # Checkpoint and input problems carry a one-line message that names the file.
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C outside training's own handling (loading, evaluating, ...)
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
