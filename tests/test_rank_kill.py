"""Killing ONE torchrun rank (SIGKILL of a single worker, not the job) mid-way, then rerunning
the same command: every output complete, equal to an uninterrupted run, each image written
once. torchrun tears the other worker down; the rerun finishes the rest."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from test_segment_scale import DEMO, ENV, outputs, segment, street

IMAGES = 16


def worker_pid(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker with RANK=rank among ``parent``'s children."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        except (OSError, ValueError, IndexError):
            continue
        if env.get(b"RANK") == str(rank).encode():
            return int(entry)
    return None


def journal_lines(out: Path, rank: int) -> list[dict]:
    lines = []
    for p in out.glob(f".mask2former/done-*-rank{rank}.jsonl"):
        for line in p.read_text().splitlines():
            if line.strip().endswith("}"):
                lines.append(json.loads(line))
    return lines


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker through /proc")
def test_killing_one_rank_then_rerun_finishes(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(IMAGES):
        Image.fromarray(street(96, 160, i)).save(folder / f"f{i:02d}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29695",
           "-m", "mask2former.cli", "segment", str(folder), "--out", str(out), "--model", DEMO, "--resize", "config",
           "--num-workers", "1"]
    job = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, victim = time.time() + 240, None
    while time.time() < deadline and job.poll() is None:
        if len(journal_lines(out, 1)) >= 2:
            victim = worker_pid(job.pid, 1)
            break
        time.sleep(0.05)
    assert victim is not None, "rank 1 never got going"
    os.kill(victim, signal.SIGKILL)
    assert job.wait(timeout=300) != 0  # torchrun reports the dead worker
    done_before = {r["stem"] for rank in (0, 1) for r in journal_lines(out, rank)}
    assert 2 <= len(done_before) < IMAGES, "the run was not killed mid-way"
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*_labels.png")}

    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not list(out.rglob(".tmp-*"))
    keys = [r["key"] for rank in (0, 1) for r in journal_lines(out, rank)]
    assert len(keys) == len(set(keys)) == IMAGES  # each image journaled, so written, once
    for name, mtime in before.items():
        if name.replace("_labels.png", "") in done_before:  # finished before the kill: not rewritten
            assert (out / name).stat().st_mtime_ns == mtime, name
    fresh = tmp_path / "fresh"
    assert segment(str(folder), "--out", str(fresh), "--model", DEMO, "--resize", "config").returncode == 0
    assert outputs(out) == outputs(fresh)
