"""Stopping training with real signals sent to the whole process group, as `timeout`, docker,
Slurm and a terminal's Ctrl-C do, with the default DataLoader workers: a checkpoint is saved,
the exit is clean (status 0, no traceback). (Resuming from it: tests/test_train.py.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from mask2former.data.synthetic import generate

    root = tmp_path_factory.mktemp("syn")
    generate(root, num_train=8, num_val=0, size=(64, 96), seed=2)
    return str(root)


def train_command(root: str, out: str, iterations: int, launcher: list[str]) -> list[str]:
    return [*launcher, "-m", "mask2former.cli", "train", "--data-root", root, "--output-dir", out,
            "--architecture", "tiny", "--iterations", str(iterations), "--batch-size", "2", "--crop-size", "64",
            "64", "--base-size", "64", "--eval-period", "0", "--checkpoint-period", "100000",
            "--set", "log_period=1", "--set", "model_overrides={num_queries: 8, decoder_layers: 3, encoder_layers: 1}"]


def start(cmd: list[str]) -> subprocess.Popen:
    # Its own session: the signal goes to the run's whole process group, workers included.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def signal_group_after(proc: subprocess.Popen, log: str, steps: int, sig: int) -> tuple[str, str]:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(log) and open(log, encoding="utf-8").read().count("\n") >= steps:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    os.killpg(proc.pid, sig)
    return proc.communicate(timeout=300)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_group_signal_saves_and_exits_cleanly(synthetic, tmp_path, sig):
    out = str(tmp_path / "run")
    proc = start(train_command(synthetic, out, 100000, [sys.executable]))  # default num_workers: 2
    _, err = signal_group_after(proc, os.path.join(out, "metrics.jsonl"), 2, sig)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "killed by signal" not in err, err[-3000:]
    name = signal.Signals(sig).name
    assert f"{name}: checkpoint saved at iteration" in err
    state = torch.load(os.path.join(out, "last_checkpoint.pth"), weights_only=False)
    assert 2 <= state["iteration"] < 100000
    assert not os.path.exists(os.path.join(out, "model"))  # stopped early: no final model


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_group_signal_under_torchrun(synthetic, tmp_path, sig):
    """Every rank stops at the same iteration and saves once; our processes print no traceback
    (torchrun itself reports the signal it received and exits 1)."""
    out = str(tmp_path / "run")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29657"]
    proc = start(train_command(synthetic, out, 100000, launcher))
    _, err = signal_group_after(proc, os.path.join(out, "metrics.jsonl"), 2, sig)
    name = signal.Signals(sig).name
    assert f"{name}: checkpoint saved at iteration" in err, err[-3000:]
    our_frames = [line for line in err.splitlines() if line.strip().startswith('File "') and "mask2former" in line]
    assert not our_frames, err[-3000:]
    assert "killed by signal" not in err and "ChildFailedError" not in err
    state = torch.load(os.path.join(out, "last_checkpoint.pth"), weights_only=False)
    assert state["iteration"] >= 2 and len(state["rng_per_rank"]) == 2
