"""An interrupted video resumes: ``segment clip.mp4`` killed with SIGKILL after some chunks
were committed, then rerun, ends with the overlay video (frame count, size, fps) and a CSV
equal to an uninterrupted run's, and the committed chunks' frames were not segmented again
(their label PNGs keep their inodes)."""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_video import DEMO, ENV, decoded, make_video, segment

pytest.importorskip("av")

FRAMES, CHUNK = 40, 8
COMMON = ["--model", DEMO, "--resize", "config", "--save-frames", "--video-chunk", str(CHUNK), "--num-workers", "1"]


def committed(out: Path) -> list[dict]:
    records = []
    for path in glob.glob(str(out / ".mask2former" / "video-*" / "chunks-rank*.jsonl")):
        for line in open(path, encoding="utf-8"):
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    return records


def stat_of(path: Path) -> tuple[int, int]:
    s = path.stat()
    return s.st_ino, s.st_mtime_ns


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("longclip") / "clip.mp4"
    make_video(path, FRAMES)
    return path


def test_killed_video_resumes_from_its_chunks(long_clip, tmp_path):
    whole = segment(str(long_clip), "--out", str(tmp_path / "whole"), *COMMON)
    assert whole.returncode == 0, whole.stderr[-2000:]

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mask2former.cli", "segment", str(long_clip), "--out", str(out), *COMMON]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 240
    while len(committed(out)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = committed(out)
    assert 2 <= len(first) < FRAMES // CHUNK, "the run was not killed mid-way"
    assert not (out / "clip_frames.csv").exists()
    done_frames = {f for r in first for f in range(r["chunk"] * CHUNK, (r["chunk"] + 1) * CHUNK)}
    pngs = {n: out / "clip" / f"frame_{n:06d}_labels.png" for n in range(FRAMES)}
    before = {n: stat_of(p) for n, p in pngs.items() if p.exists()}
    assert done_frames <= before.keys()

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "clip_frames.csv").read_bytes() == (tmp_path / "whole" / "clip_frames.csv").read_bytes()
    for n, p in pngs.items():
        assert p.read_bytes() == (tmp_path / "whole" / "clip" / p.name).read_bytes(), n
        if n in done_frames:
            assert stat_of(p) == before[n], f"frame {n} of a committed chunk was segmented again"
        elif n in before:
            assert stat_of(p) != before[n], f"frame {n} of an unfinished chunk was not redone"
    frames, fps, size = decoded(out / "clip_overlay.mp4")
    ref_frames, ref_fps, ref_size = decoded(long_clip)
    assert len(frames) == FRAMES and fps == ref_fps and size == ref_size
    assert not list(out.rglob(".tmp-*")) and not list((out / ".mask2former").glob("video-*"))


def test_bad_chunk_length_is_one_line(long_clip, tmp_path):
    res = segment(str(long_clip), "--out", str(tmp_path / "out"), "--video-chunk", "0")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert [line for line in res.stderr.splitlines() if line.startswith("error:")] == [
        "error: --video-chunk must be at least 1 frame; got 0"]
