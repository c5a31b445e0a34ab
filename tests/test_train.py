"""Training: optimiser recipe, deterministic data order, exact resume, SIGTERM, NaN, DDP."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from mask2former.train import TrainConfig, Trainer
from mask2former.train.model_init import architecture_config
from mask2former.train.optim import build_optimizer, poly_factor
from mask2former.train.trainer import NonFiniteLossError, batch_plan

TINY = {"num_queries": 8, "decoder_layers": 3, "encoder_layers": 1, "train_num_points": 256}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from mask2former.data.synthetic import generate

    root = tmp_path_factory.mktemp("syn")
    generate(root, num_train=16, num_val=2, size=(64, 96), seed=3)
    return str(root)


def config(root: str, out: str, **kw) -> TrainConfig:
    base = dict(dataset="folder", data_root=root, architecture="tiny", model_overrides=TINY, iterations=6,
                batch_size=2, crop_size=(64, 64), base_size=64, max_size=128, eval_period=0, num_workers=0,
                checkpoint_period=2, log_period=1, output_dir=out, seed=1, lr=3e-4)
    base.update(kw)
    return TrainConfig.from_dict(base)


def run_cli(cfg: TrainConfig, *extra: str, env=None) -> subprocess.Popen:
    args = [sys.executable, "-m", "mask2former.cli", "train", "--set", f"model_overrides={json.dumps(TINY)}"]
    for k, v in cfg.to_dict().items():
        if k not in ("model_overrides", "crop_size") and v is not None:
            args += ["--set", f"{k}={json.dumps(v)}"]
    args += ["--crop-size", *map(str, cfg.crop_size), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def weights(folder: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(folder, "model", "model.safetensors"))


def test_param_groups_follow_the_recipe():
    from mask2former import Mask2FormerForUniversalSegmentation

    model = Mask2FormerForUniversalSegmentation(architecture_config("tiny", {0: "a", 1: "b"}, TINY))
    opt = build_optimizer(model, lr=1e-4, weight_decay=0.05, backbone_multiplier=0.1)
    setting = {}
    for g in opt.param_groups:
        for p in g["params"]:
            setting[id(p)] = (g["lr"], g["weight_decay"])
    named = dict(model.named_parameters())
    assert setting[id(named["backbone.layers.0.blocks.0.attn.qkv.weight"])] == pytest.approx((1e-5, 0.05))
    assert setting[id(named["backbone.layers.0.blocks.0.attn.relative_position_bias_table"])] == pytest.approx((1e-5, 0.0))
    assert setting[id(named["backbone.norm0.weight"])] == pytest.approx((1e-5, 0.0))
    assert setting[id(named["transformer_decoder.query_feat.weight"])] == pytest.approx((1e-4, 0.0))
    assert setting[id(named["transformer_decoder.decoder_norm.weight"])] == pytest.approx((1e-4, 0.0))
    assert setting[id(named["pixel_decoder.adapter_1.norm.weight"])] == pytest.approx((1e-4, 0.0))
    assert setting[id(named["transformer_decoder.class_embed.weight"])] == pytest.approx((1e-4, 0.05))
    assert len(setting) == len(named)


def test_poly_schedule():
    assert poly_factor(0, 100) == 1.0
    assert poly_factor(50, 100) == pytest.approx(0.5 ** 0.9)
    assert poly_factor(100, 100) == 0.0
    assert poly_factor(5, 100, warmup_iters=10, warmup_factor=0.1) == pytest.approx((0.1 * 0.5 + 0.5) * 0.95 ** 0.9)


def test_batch_plan_is_a_function_of_the_iteration():
    full = list(batch_plan(10, 4, 0, 0, 7, 0, 1, 1))
    assert full[3:] == list(batch_plan(10, 4, 0, 3, 7, 0, 1, 1))  # resuming replays the same data
    two = [list(batch_plan(10, 4, 0, 0, 7, r, 2, 1)) for r in range(2)]
    assert all(a + b == f for a, b, f in zip(two[0], two[1], full))  # ranks split the global batch
    acc = list(batch_plan(10, 4, 0, 0, 7, 0, 1, 2))
    assert [a + b for a, b in zip(acc[0::2], acc[1::2])] == full  # accumulation splits it in time
    assert full[0] != full[2]  # a new epoch is a new permutation


def test_resume_after_sigkill_is_bit_exact(synthetic, tmp_path):
    # 12 iterations: on a busy machine the run must still be mid-way when the watcher below
    # sees the iteration-2 checkpoint (with 6 it had sometimes reached its final export).
    straight = config(synthetic, str(tmp_path / "straight"), iterations=12)
    # Same process settings (threads) for both runs: float reductions must happen in one order.
    done = run_cli(straight)
    assert done.wait(timeout=300) == 0, done.stderr.read()
    killed = config(synthetic, str(tmp_path / "killed"), iterations=12)
    proc = run_cli(killed)
    ckpt = tmp_path / "killed" / "last_checkpoint.pth"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=False)["iteration"] >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "model").exists()
    resumed = run_cli(killed, "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resumed from iteration" in err
    a, b = weights(straight.output_dir), weights(killed.output_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigterm_saves_and_exits_cleanly(synthetic, tmp_path):
    cfg = config(synthetic, str(tmp_path / "run"), iterations=10000, checkpoint_period=10000)
    proc = run_cli(cfg)
    log = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "SIGTERM" in err
    state = torch.load(tmp_path / "run" / "last_checkpoint.pth", weights_only=False)
    assert 2 <= state["iteration"] < 10000


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_non_finite_loss(synthetic, tmp_path, monkeypatch, mode):
    cfg = config(synthetic, str(tmp_path / mode), iterations=3, on_nan=mode)
    trainer = Trainer(cfg)
    original = trainer.model.criterion.forward
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        losses = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(trainer.model.criterion, "forward", poisoned)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    if mode == "stop":
        with pytest.raises(NonFiniteLossError, match="iteration 2"):
            trainer.train()
    else:
        assert trainer.train() is not None
        after = trainer.model.state_dict()
        assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
        assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one(synthetic, tmp_path):
    """Same global batch on 1 and on 2 processes. The loss's random points are drawn per image
    (seeded by iteration and sample), so both runs see the same points; what remains is the
    original's own DDP semantics (each process averages its class loss over its own queries
    before gradients are averaged) and float summation order. Tolerance: the two runs end
    closer than 5% of the distance training moved the weights (drop path off; every crop full
    size, since the network does not mask padding and padding depends on who shares a batch)."""
    iters = 4
    no_drop = {**TINY, "backbone": {"drop_path_rate": 0.0}}
    kw = dict(iterations=iters, batch_size=4, model_overrides=no_drop, base_size=128)
    single = config(synthetic, str(tmp_path / "one"), **kw)
    Trainer(single).train()
    init = Trainer(config(synthetic, str(tmp_path / "init"), **kw)).model.state_dict()
    ddp = config(synthetic, str(tmp_path / "two"), **kw)
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29613",
            "-m", "mask2former.cli", "train", "--set", f"model_overrides={json.dumps(no_drop)}"]
    for k, v in ddp.to_dict().items():
        if k not in ("model_overrides", "crop_size") and v is not None:
            args += ["--set", f"{k}={json.dumps(v)}"]
    args += ["--crop-size", "64", "64"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = weights(single.output_dir), weights(ddp.output_dir)
    from mask2former.checkpoint.hf_names import ours_to_hf

    start = ours_to_hf(init)
    moved = math.sqrt(sum(((a[k] - start[k]) ** 2).sum().item() for k in a if k in start))
    apart = math.sqrt(sum(((a[k] - b[k]) ** 2).sum().item() for k in a))
    assert moved > 0
    print(f"DDP vs one process: weights apart {apart:.3g}, moved {moved:.3g}, ratio {apart / moved:.4f}")
    assert apart < 0.05 * moved, (apart, moved)


def test_init_from_checkpoint_with_other_classes(tmp_path):
    from mask2former import Mask2FormerForUniversalSegmentation
    from mask2former.train.model_init import build_train_model

    source = Mask2FormerForUniversalSegmentation(architecture_config("tiny", {i: f"c{i}" for i in range(5)}, TINY))
    source.save_pretrained(tmp_path)
    model = build_train_model("tiny", str(tmp_path), None, {0: "x", 1: "y", 2: "z"}, {})
    assert model.transformer_decoder.class_embed.out_features == 4 and model.config.num_labels == 3
    kept = source.state_dict()
    for k, v in model.state_dict().items():
        if "class_embed" not in k:
            assert torch.equal(v, kept[k]), k
    same = build_train_model("tiny", str(tmp_path), None, {i: f"n{i}" for i in range(5)}, {})
    assert torch.equal(same.transformer_decoder.class_embed.weight, source.transformer_decoder.class_embed.weight)


def test_init_from_bare_backbone(tmp_path):
    from mask2former import Mask2FormerForUniversalSegmentation
    from mask2former.train.model_init import build_train_model

    donor = Mask2FormerForUniversalSegmentation(architecture_config("tiny", {0: "a"}, TINY))
    torch.save({"model": {"backbone." + k: v for k, v in donor.backbone.state_dict().items()}}, tmp_path / "bb.pth")
    model = build_train_model("tiny", None, str(tmp_path / "bb.pth"), {0: "a", 1: "b"}, TINY)
    for k, v in donor.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="wrong.pth"):
        build_train_model("tiny", None, str(tmp_path / "wrong.pth"), {0: "a"}, TINY)


@pytest.mark.parametrize("task,key", [("semantic", "mIoU"), ("panoptic", "PQ"), ("instance", "AP")])
def test_periodic_evaluation_reports_the_task_metric(synthetic, tmp_path, task, key):
    cfg = config(synthetic, str(tmp_path / task), iterations=2, eval_period=2, task=task)
    folder = Trainer(cfg).train()
    metrics = json.loads((tmp_path / task / "model" / "metrics.json").read_text())
    assert key in metrics and (metrics[key] != metrics[key] or 0 <= metrics[key] <= 100)  # NaN allowed: no match
    logged = [json.loads(line) for line in (tmp_path / task / "metrics.jsonl").read_text().splitlines()]
    assert any(key in r for r in logged)
    assert folder.endswith("model")
