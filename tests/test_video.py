"""``segment clip.mp4``: the overlay video keeps frame count, size and frame rate; per-frame
labels equal segmenting the decoded frames one by one; stride/start/end; two torchrun
processes give the frames one gives; memory stays flat over a long video."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "models" / "demo-street")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def make_video(path: Path, frames: int, size=(64, 96), fps: int = 8) -> None:
    """A moving street-like scene, H.264 (or MPEG-4 where PyAV lacks libx264)."""
    h, w = size
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[: h // 3] = (135, 180, 235)
            img[h // 3:] = (80, 80, 85)
            x = (i * 5) % w
            img[h // 2: h // 2 + 12, x: x + 16] = (200, 30, 30)
            img = np.clip(img + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def decoded(path: Path) -> tuple[list[np.ndarray], Fraction, tuple[int, int]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        return frames, Fraction(s.average_rate), (s.codec_context.height, s.codec_context.width)


def segment(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mask2former.cli", "segment", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    make_video(path, 8)
    return path


@pytest.fixture(scope="module")
def one_process(clip, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one")
    res = segment(str(clip), "--out", str(out), "--model", DEMO, "--resize", "config", "--save-frames",
                  "--batch-size", "3")
    assert res.returncode == 0, res.stderr
    return out


def test_overlay_video_and_per_frame_labels(clip, one_process, one_thread):
    from mask2former import Segmenter

    frames, fps, size = decoded(clip)
    overlay, ofps, osize = decoded(one_process / "clip_overlay.mp4")
    assert len(overlay) == len(frames) == 8 and ofps == fps and osize == size
    seg = Segmenter(DEMO, resize="config")
    rows = list(csv.DictReader(open(one_process / "clip_frames.csv")))
    assert [int(r["frame"]) for r in rows] == list(range(8))
    for n, frame in enumerate(frames):  # the source decoded here, one frame at a time
        expected = seg(frame)
        labels = np.array(Image.open(one_process / "clip" / f"frame_{n:06d}_labels.png"))
        assert (labels == np.where(expected.labels < 0, 255, expected.labels)).all(), n
        counts = np.bincount(labels.ravel(), minlength=256)
        assert [int(rows[n][name]) for name in expected.class_names] == counts[:len(expected.class_names)].tolist()
        # the overlay video shows the overlay (up to H.264's losses)
        assert np.abs(overlay[n].astype(int) - expected.overlay().astype(int)).mean() < 6


def test_stride_start_end(clip, tmp_path):
    out = tmp_path / "out"
    res = segment(str(clip.parent / "*.mp4"), "--out", str(out), "--model", DEMO, "--resize", "config",  # a glob
                  "--frame-stride", "2",
                  "--start", "0.25", "--end", "1.25", "--no-overlay")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(out / "clip_frames.csv")))
    # 8 fps: frames 2..7 lie in [0.25, 1.25); every second decoded frame
    assert [int(r["frame"]) for r in rows] == [2, 4, 6]
    assert not (out / "clip_overlay.mp4").exists()


def test_two_processes_split_the_video(clip, one_process, tmp_path):
    out = tmp_path / "two"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29681", "-m", "mask2former.cli", "segment", str(clip), "--out", str(out), "--model", DEMO,
                          "--resize", "config", "--save-frames"], capture_output=True, text=True, timeout=600, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "clip_frames.csv").read_bytes() == (one_process / "clip_frames.csv").read_bytes()
    for n in range(8):
        name = f"clip/frame_{n:06d}_labels.png"
        assert (out / name).read_bytes() == (one_process / name).read_bytes()
    two, fps, size = decoded(out / "clip_overlay.mp4")
    one, fps1, size1 = decoded(one_process / "clip_overlay.mp4")
    assert len(two) == 8 and fps == fps1 and size == size1
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(one, two)) < 4


def test_rerun_skips_a_finished_video(clip, one_process, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(one_process, out)
    before = (out / "clip_overlay.mp4").stat().st_mtime_ns
    res = segment(str(clip), "--out", str(out), "--model", DEMO, "--resize", "config", "--save-frames")
    assert res.returncode == 0 and (out / "clip_overlay.mp4").stat().st_mtime_ns == before


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_memory_stays_flat_over_a_long_video(tmp_path):
    """1,500 frames: resident memory after 1,300 frames exceeds that after 300-500 by less
    than 8 MiB (each frame's overlay is 18 KiB: keeping them would add over 14 MiB)."""
    model = tmp_path / "model"
    shutil.copytree(DEMO, model)
    (model / "preprocessor_config.json").write_text(
        (model / "preprocessor_config.json").read_text().replace('"shortest_edge": 256', '"shortest_edge": 64'))
    path = tmp_path / "long.mp4"
    make_video(path, 1500, fps=25)
    proc = subprocess.Popen([sys.executable, "-m", "mask2former.cli", "segment", str(path), "--out",
                             str(tmp_path / "out"), "--model", str(model), "--resize", "config"],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    chunks = tmp_path / "out" / ".mask2former"  # chunk CSVs grow by one line per frame written
    samples: list[tuple[int, int]] = []  # (frames written, RSS KiB)

    def watch() -> None:
        while proc.poll() is None:
            try:
                frames = sum(p.read_bytes().count(b"\n") for p in chunks.glob("video-*/*chunk-*.csv"))
                samples.append((frames, _rss_kib(proc.pid)))
            except OSError:
                pass
            time.sleep(0.1)

    t = threading.Thread(target=watch)
    t.start()
    _, err = proc.communicate(timeout=900)
    t.join()
    assert proc.returncode == 0, err[-2000:]
    rows = (tmp_path / "out" / "long_frames.csv").read_text().splitlines()
    assert len(rows) == 1501
    early = [r for f, r in samples if 300 <= f < 500 and r > 0]
    late = [r for f, r in samples if f >= 1300 and r > 0]
    assert early and late
    assert max(late) - max(early) < 8 * 1024, (max(early), max(late))


def test_folder_of_numbered_frames_is_a_video(clip, one_process, tmp_path):
    """The clip's decoded frames saved as frame_0.png ... frame_7.png (number order, not
    name order) give the clip's own per-frame table and labels."""
    folder = tmp_path / "clip"
    folder.mkdir()
    frames, fps, _ = decoded(clip)
    for n, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{n}.png")
    (folder / "frame_10.png").write_bytes((folder / "frame_7.png").read_bytes())  # sorts after 7, not after 1
    out = tmp_path / "out"
    res = segment(str(folder), "--video-fps", str(fps), "--out", str(out), "--model", DEMO, "--resize", "config",
                  "--save-frames")
    assert res.returncode == 0, res.stderr
    rows = (out / "clip_frames.csv").read_text().splitlines()
    assert rows[:9] == (one_process / "clip_frames.csv").read_text().splitlines()
    assert rows[9].split(",")[2:] == rows[8].split(",")[2:]
    overlay, ofps, _ = decoded(out / "clip_overlay.mp4")
    assert len(overlay) == 9 and ofps == fps


def test_video_without_pyav_is_one_line(clip, tmp_path):
    """No traceback when PyAV is missing: one line naming the video and the install."""
    code = ("import sys; sys.modules['av'] = None; from mask2former.cli import main; "
            f"sys.exit(main(['segment', {str(clip)!r}, '--out', {str(tmp_path / 'o')!r}, '--model', {DEMO!r}]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    assert "clip.mp4" in lines[0] and "pip install" in lines[0]
