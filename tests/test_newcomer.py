"""What a new user meets first: set-up that states its real requirements, help for every option,
one clear line instead of a traceback (devices, checkpoints, options, datasets, memory), and the
Python API's error type."""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mask2former.cli import build_parser, describe_backbone, main
from mask2former.devices import resolve_device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "models", "demo-street")
EXAMPLE = os.path.join(ROOT, "examples", "street.png")
TINY_TRAIN = ["--architecture", "tiny", "--iterations", "2", "--batch-size", "2", "--crop-size", "64", "64",
              "--base-size", "64", "--eval-period", "0", "--num-workers", "0"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from mask2former.data.synthetic import generate

    root = tmp_path_factory.mktemp("syn")
    generate(root, num_train=6, num_val=0, size=(64, 96), seed=5)
    return str(root)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# -- set-up ------------------------------------------------------------------------------------

def test_setup_states_the_python_range_and_the_torch_build():
    pyproject = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    low = re.search(r'requires-python = ">=3\.(\d+)', pyproject).group(1)
    assert sys.version_info[:2] >= (3, int(low))
    # torch 2.13.0, which requirements.txt pins, has wheels for CPython 3.10-3.14 only.
    assert "torch==2.13.0" in open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8").read()
    assert int(low) >= 10 and f"Python 3.{low}" in readme
    assert "download.pytorch.org/whl/cpu" in readme
    quick = readme.split("## Quick start")[1].split("\n## ")[0]
    commands = re.findall(r"```bash\n(.*?)```", quick, re.S)
    assert len(commands) == 2 and "pip install -r requirements.txt" in commands[0] and "pytest" in commands[1]
    from mask2former import __version__

    assert f'version = "{__version__}"' in pyproject


def test_version(capsys):
    from mask2former import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"mask2former {__version__}"


# -- help ------------------------------------------------------------------------------------

def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["info", "convert", "train", "evaluate"])
def test_every_option_has_help_with_its_default(command):
    parser = _subparsers()[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{command} {name}: no help"
        if action.required:
            assert "required" in action.help, f"{command} {name}: help does not say it is required"
        elif action.default not in (None, False) and action.option_strings:
            assert "default" in action.help, f"{command} {name}: help does not say its default"
    text = " ".join(parser.format_help().split())
    if command == "train":
        for word in ("tiny", "swin-l", "cityscapes_panoptic", "panoptic", "90000", "512 1024", "16"):
            assert word in text, word


def test_training_fields_are_documented():
    from mask2former.train.config import FIELD_HELP, TrainConfig

    doc = open(os.path.join(ROOT, "docs", "training.md"), encoding="utf-8").read()
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert set(FIELD_HELP) == set(fields)
    for name in fields:
        assert f"`{name}`" in doc, name
    for topic in ("classes.json", "instances/", "isthing", "--check-data", "memory_check"):
        assert topic in doc, topic


# -- one clear line ------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name,words", [("cuda", "CUDA"), ("cuda:1", "CUDA"), ("gpu", "not a device name"),
                                        ("mps", "MPS"), ("meta", "not supported")])
def test_missing_or_unknown_devices_are_one_line(name, words):
    with pytest.raises(ValueError, match=words):
        resolve_device(name)
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None).type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_error_in_every_entry_point(capsys, synthetic, tmp_path):
    from mask2former import Segmenter

    with pytest.raises(ValueError, match="device 'cuda'"):
        Segmenter("no/such/model/anywhere", device="cuda")  # checked before loading anything
    runs = [["segment", EXAMPLE, "--model", DEMO, "--out", str(tmp_path / "seg"), "--device", "cuda"],
            ["evaluate", "--model", DEMO, "--dataset", "folder", "--data-root", synthetic, "--split", "train",
             "--device", "mps"],
            ["train", "--data-root", synthetic, "--output-dir", str(tmp_path / "t"), *TINY_TRAIN, "--device", "cuda"]]
    for argv in runs:
        assert main(argv) == 1
        assert "device" in one_error_line(capsys)
    assert not (tmp_path / "seg").exists() or not os.listdir(tmp_path / "seg")


def test_checkpoint_problems_name_the_file(capsys, tmp_path):
    truncated = tmp_path / "truncated"
    shutil.copytree(DEMO, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])
    bad_config = tmp_path / "bad_config"
    shutil.copytree(DEMO, bad_config)
    (bad_config / "config.json").write_text('{"backbone_config": ')
    cases = [(str(truncated), "model.safetensors"), (str(bad_config), "config.json"),
             ("./models/nonexist", "no such file or folder"), (str(tmp_path / "a" / "b" / "c"), "no such file")]
    for model, words in cases:
        assert main(["info", model]) == 1
        line = one_error_line(capsys)
        assert words in line and model.lstrip("./") in line, line
        assert "Repo id" not in line


def test_missing_path_is_not_a_hub_id():
    from mask2former.checkpoint.hub import looks_like_path

    for path in ("./x", "../x", "/x", "~/x", "a/b/c", "models/nonexist", "x\\y"):
        assert looks_like_path(path), path
    for hub_id in ("facebook/mask2former-swin-tiny-cityscapes-semantic", "gpt2"):
        assert not looks_like_path(hub_id), hub_id


@pytest.mark.parametrize("setting,words", [("lr=abc", "lr: expected a number"),
                                           ("iterations=1.5", "iterations: expected an integer"),
                                           ("amp=maybe", "amp: expected true or false"),
                                           ("crop_size=[1, 2, 3]", "crop_size"),
                                           ("no_such_field=1", "unknown training options: no_such_field"),
                                           ("lr", "expected KEY=VALUE")])
def test_bad_training_options_are_one_line(capsys, synthetic, tmp_path, setting, words):
    assert main(["train", "--data-root", synthetic, "--output-dir", str(tmp_path), "--set", setting]) == 1
    assert words in one_error_line(capsys)


def test_bad_config_file_names_it(capsys, synthetic, tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("lr: [1\nbatch_size: 2\n")
    assert main(["train", "--config", str(path), "--data-root", synthetic]) == 1
    assert str(path) in one_error_line(capsys)
    path.write_text("lr: fast\n")
    assert main(["train", "--config", str(path), "--data-root", synthetic]) == 1
    line = one_error_line(capsys)
    assert str(path) in line and "lr" in line


def test_numbers_written_the_short_way_are_accepted():
    from mask2former.train.config import TrainConfig

    cfg = TrainConfig.from_dict({"lr": "1e-4", "crop_size": 256, "amp": "false", "iterations": "10"})
    assert (cfg.lr, cfg.crop_size, cfg.amp, cfg.iterations) == (1e-4, (256, 256), False, 10)


# -- training: memory, data, --init ---------------------------------------------------------------

def test_impossible_memory_is_refused_before_training(capsys, synthetic, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--data-root", synthetic, "--output-dir", str(out), "--architecture", "tiny",
            "--batch-size", "4096", "--crop-size", "1024", "1024", "--num-workers", "0"]
    assert main(argv) == 1
    line = one_error_line(capsys)
    assert "GB" in line and "--crop-size" in line and "memory_check=false" in line
    assert not out.exists()  # refused before anything was written


def test_memory_advice_fits(monkeypatch):
    from mask2former.train import memory

    from mask2former import Mask2FormerForUniversalSegmentation
    from mask2former.train.model_init import architecture_config

    model = Mask2FormerForUniversalSegmentation(architecture_config("tiny", {0: "a"}, {"num_queries": 8}))
    est = memory.MemoryEstimate(total=40e9, per_image=2e9, fixed=8e9, available=24e9, where="of RAM is available")
    with pytest.raises(ValueError) as e:
        memory.check_fits(est, "swin-t", (512, 1024), batch_size=16, world=1, accumulate=1)
    # (0.85 x 24 - 8) / 2 = 6 images fit at a time: 16 in 4 micro-batches of 4.
    assert "--accumulate 4 (same batch, 4 images at a time)" in str(e.value)
    assert "--batch-size 6" in str(e.value)
    memory.check_fits(dataclasses.replace(est, total=20e9), "swin-t", (512, 1024), 16, 1, 1)  # fits: no error
    assert memory.architecture_key(model, "tiny") == "tiny"  # matched by parameter count


def _break_label(root: str, stem: str, how: str) -> str:
    path = os.path.join(root, "labels", "train", stem + ".png")
    labels = np.array(Image.open(path))
    if how == "value":
        labels[0, 0] = 40
    else:
        labels = labels[:10, :10]
    Image.fromarray(labels).save(path)
    return path


@pytest.fixture()
def broken(synthetic, tmp_path):
    root = str(tmp_path / "data")
    shutil.copytree(synthetic, root)
    return root


def test_bad_dataset_is_one_line_before_training(capsys, broken, tmp_path):
    stems = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(broken, "labels", "train")))
    value = _break_label(broken, stems[1], "value")
    size = _break_label(broken, stems[4], "size")
    out = tmp_path / "run"
    assert main(["train", "--data-root", broken, "--output-dir", str(out), *TINY_TRAIN]) == 1
    line = one_error_line(capsys)
    assert value in line and "outside 0..7" in line
    assert not (out / "metrics.jsonl").exists()
    assert main(["train", "--data-root", broken, "--output-dir", str(out), *TINY_TRAIN, "--check-data"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and value in err and size in err and "2 of 6 training images" in err


def test_bad_file_met_during_training_is_one_line(broken, tmp_path):
    """A file that goes bad after the start check, read in a DataLoader worker: the main process
    raises the reader's own one-line error."""
    from mask2former.data import DatasetError
    from mask2former.train import TrainConfig, Trainer

    cfg = TrainConfig.from_dict(dict(dataset="folder", data_root=broken, architecture="tiny", iterations=3,
                                     batch_size=6, crop_size=(64, 64), base_size=64, max_size=128, eval_period=0,
                                     num_workers=1, output_dir=str(tmp_path / "run"),
                                     model_overrides={"num_queries": 8, "decoder_layers": 3, "encoder_layers": 1}))
    trainer = Trainer(cfg)
    stem = sorted(os.listdir(os.path.join(broken, "labels", "train")))[2][:-4]
    path = _break_label(broken, stem, "size")
    with pytest.raises(DatasetError) as e:
        trainer.train()
    assert str(e.value).startswith(path) and "\n" not in str(e.value)


def test_init_says_when_the_class_head_is_new(capsys, tmp_path):
    from mask2former.train.model_init import build_train_model

    build_train_model("tiny", DEMO, None, {0: "a", 1: "b", 2: "c"}, {})
    err = capsys.readouterr().err
    assert "8 classes" in err and "3" in err and "re-initialised" in err
    build_train_model("tiny", DEMO, None, {i: f"c{i}" for i in range(8)}, {})
    assert "re-initialised" not in capsys.readouterr().err


# -- Python API, info ---------------------------------------------------------------------------

def test_segmentation_error_is_an_exception(tmp_path):
    from mask2former import SegmentationError, Segmenter

    assert issubclass(SegmentationError, Exception) and issubclass(SegmentationError, OSError)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = str(tmp_path / "small.png")
    Image.open(EXAMPLE).convert("RGB").resize((96, 48)).save(good)
    from mask2former.processor import Mask2FormerImageProcessor

    small = Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    seg = Segmenter(DEMO, device="cpu", resize="config", processor=small)
    with pytest.raises(SegmentationError) as e:
        seg(str(empty))
    assert str(e.value).count(str(empty)) == 1 and e.value.source == str(empty)
    with pytest.raises(SegmentationError):
        seg([good, str(empty)])  # a list raises on its first bad input
    results = list(seg.stream([good, str(empty)]))
    assert results[0].labels.shape == (48, 96)
    assert isinstance(results[1], SegmentationError) and results[1].message == str(e.value)
    assert results[1] == SegmentationError(str(empty), results[1].message)


def test_info_describes_custom_swins():
    from mask2former import Mask2FormerForUniversalSegmentation
    from mask2former.train.model_init import architecture_config

    demo = Mask2FormerForUniversalSegmentation.from_pretrained(DEMO)
    assert describe_backbone(demo.config).startswith("Swin (custom: embed dim 32, depths 2-2-2-2")
    for arch, name in (("swin-t", "Swin-T"), ("swin-s", "Swin-S"), ("swin-b", "Swin-B"), ("swin-l", "Swin-L"),
                       ("r50", "ResNet-50")):
        assert describe_backbone(architecture_config(arch, {0: "x"}, {})).startswith(name + " ("), arch


def test_compile_says_it_compiles(capsys):
    from mask2former import Mask2FormerForUniversalSegmentation
    from mask2former.precision import prepare

    model = Mask2FormerForUniversalSegmentation.from_pretrained(DEMO)
    prepare(model, "fp32", torch.device("cpu"), compile=True)  # compiling itself waits for the first image
    err = capsys.readouterr().err
    assert "compiled on the first image" in err and "minute" in err
    prepare(model, "fp32", torch.device("cpu"), compile=False)
    assert capsys.readouterr().err == ""
