"""``segment`` at scale: torchrun processes equal one process, kill + rerun resumes, ``--list``,
outputs never inputs, name collisions, option checks, the instance picture threshold, the
decompression-bomb limit and the memory check. Uses the tiny trained demo model."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "models" / "demo-street")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def segment(*args: str, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mask2former.cli", "segment", *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV, input=stdin)


def torchrun(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), "-m", "mask2former.cli", "segment", *args], capture_output=True, text=True,
                          timeout=600, env=ENV)


def error_lines(stderr: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", stderr) if line.startswith("error:")]


def outputs(folder: Path) -> dict[str, bytes]:
    """Every output file (not the resume journal) -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".mask2former" not in p.parts}


def street(h: int, w: int, seed: int) -> np.ndarray:
    """A street-like synthetic photo (sky, buildings, road) the demo model segments sensibly."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 3] = (135, 180, 235)
    img[h // 3: 2 * h // 3] = (120, 110, 100)
    img[2 * h // 3:] = (80, 80, 85)
    return np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Seven images of four sizes, in two folders, plus an unreadable one."""
    folder = tmp_path_factory.mktemp("mixed")
    (folder / "sub").mkdir()
    sizes = [(96, 160), (160, 96), (96, 160), (128, 128), (96, 160), (160, 96), (70, 110)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(street(h, w, i)).save(folder / ("sub" if i % 3 == 0 else ".") / f"img{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


@pytest.mark.parametrize("task", ["panoptic", "instance"])
def test_two_processes_equal_one(mixed, tmp_path, task):
    """Per-image files byte-identical, run-level files (areas, panoptic.json or instances.json,
    manifest, errors) equal, one error line for the broken file, exit code 1 in both."""
    common = ["--model", DEMO, "--task", task, "--resize", "config", "--batch-size", "2"]
    one = segment(str(mixed), "--out", str(tmp_path / "one"), *common)
    two = torchrun(29671 if task == "panoptic" else 29672, str(mixed), "--out", str(tmp_path / "two"), *common)
    assert one.returncode == 1 and two.returncode == 1, two.stderr[-3000:]
    assert len(error_lines(two.stderr)) == len(error_lines(one.stderr)) == 1
    a, b = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    assert a.keys() == b.keys() and len(a) == 7 * 5 + 5  # 5 files per image; areas x2, panoptic, manifest, errors
    for name in a:
        assert a[name] == b[name], name
    if task == "panoptic":
        assert len(json.loads(a["panoptic.json"])["annotations"]) == 7
    else:
        manifest = [json.loads(line) for line in a["manifest.jsonl"].decode().splitlines()]
        assert len(manifest) == 7
        per_image = [json.loads(a[o]) for m in manifest for o in m["outputs"] if o.endswith("_instances.json")]
        joined = json.loads(a["instances.json"])
        assert joined == [e for entries in per_image for e in entries] and joined
    journals = list((tmp_path / "two" / ".mask2former").glob("done-*.jsonl"))
    assert len(journals) == 2 and all(j.stat().st_size > 0 for j in journals)  # both processes worked


@pytest.mark.slow
def test_killed_run_resumes(mixed, tmp_path):
    """SIGKILL mid-run, then the same command: every output complete, equal to an
    uninterrupted run, and no image written twice."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(14):
        Image.fromarray(street(96, 160, i)).save(folder / f"f{i:02d}.png")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "mask2former.cli", "segment", str(folder), "--out", str(out), "--model", DEMO,
            "--resize", "config", "--num-workers", "2"]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    journal_lines = 0
    while time.time() < deadline and journal_lines < 3:
        time.sleep(0.05)
        journal_lines = sum(p.read_bytes().count(b"\n") for p in out.glob(".mask2former/done-*.jsonl"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= journal_lines < 14, "the run was not killed mid-way"
    for p in out.glob("*.png"):  # whatever carries a final name is a whole file
        with Image.open(p) as im:
            im.load()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*_labels.png")}
    res = segment(str(folder), "--out", str(out), "--model", DEMO, "--resize", "config")
    assert res.returncode == 0, res.stderr
    assert not list(out.rglob(".tmp-*"))
    keys = [json.loads(line)["key"] for p in out.glob(".mask2former/done-*.jsonl")
            for line in p.read_text().splitlines() if line.strip().endswith("}")]
    assert len(keys) == len(set(keys)) == 14  # each image journaled (so written) once
    done_first = [n for n in before if n.replace("_labels.png", "") in
                  {json.loads(line)["stem"] for p in sorted(out.glob(".mask2former/done-*.jsonl"))[:1]
                   for line in p.read_text().splitlines() if line.strip().endswith("}")}]
    for name in done_first:  # finished before the kill: not rewritten
        assert (out / name).stat().st_mtime_ns == before[name]
    fresh = tmp_path / "fresh"
    assert segment(str(folder), "--out", str(fresh), "--model", DEMO, "--resize", "config").returncode == 0
    assert outputs(out) == outputs(fresh)
    again = segment(str(folder), "--out", str(out), "--model", DEMO, "--resize", "config")
    assert again.returncode == 0 and "14 from earlier runs" in again.stderr


def test_list_with_bad_paths(mixed, tmp_path):
    good = [mixed / "img1.png", mixed / "sub" / "img0.png"]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([str(good[0]), "", "# a comment", str(tmp_path / "missing.png"), str(good[1]),
                                  str(mixed / "broken.png"), str(good[0])]) + "\n")
    out = tmp_path / "out"
    res = segment("--list", str(listing), "--out", str(out), "--model", DEMO, "--resize", "config")
    assert res.returncode == 1
    errors = error_lines(res.stderr)
    assert len(errors) == 2 and any("missing.png" in e for e in errors) and any("broken.png" in e for e in errors)
    assert "Traceback" not in res.stderr
    logged = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(os.path.basename(e["path"]) for e in logged) == ["broken.png", "missing.png"]
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["input"] for m in manifest] == [str(p) for p in good]  # the duplicate counted once
    for m in manifest:
        assert all((out / o).is_file() for o in m["outputs"])
    piped = segment("--list", "-", "--out", str(tmp_path / "piped"), "--model", DEMO, "--resize", "config",
                    stdin=listing.read_text())
    assert piped.returncode == 1 and len(error_lines(piped.stderr)) == 2
    assert "2 image(s) with complete outputs" in piped.stderr
    # standard input is read once, yet the run-level files list every image, as with a file
    for name in ("manifest.jsonl", "areas.csv", "errors.jsonl"):
        assert (tmp_path / "piped" / name).read_text() == (out / name).read_text(), name


def test_outputs_are_never_inputs(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(street(64, 96, 0)).save(folder / "coffee.png")
    for _ in range(2):  # the second run sees the first one's outputs inside the input folder
        res = segment(str(folder), "--out", str(folder / "out"), "--model", DEMO, "--resize", "config", "--overwrite")
        assert res.returncode == 0, res.stderr
        assert "1 image(s)" in res.stderr
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*_labels*.png"))
    assert names == ["out/coffee_labels.png"]  # never out/out/coffee_labels_labels.png


def test_name_collisions_keep_every_output(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        Image.fromarray(street(64, 96, ord(sub))).save(tmp_path / sub / "img.png")
    Image.fromarray(street(64, 96, 1)).save(tmp_path / "cat.jpg")
    Image.fromarray(street(64, 96, 2)).save(tmp_path / "cat.png")
    out = tmp_path / "out"
    inputs = [tmp_path / "cat.jpg", tmp_path / "cat.png", tmp_path / "x" / "img.png", tmp_path / "y" / "img.png"]
    res = segment(*map(str, inputs), str(tmp_path / "cat.png"), "--out", str(out), "--model", DEMO,
                  "--resize", "config")
    assert res.returncode == 0, res.stderr
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["input"] for m in manifest] == list(map(str, inputs))
    labels = [m["outputs"][0] for m in manifest]
    assert len(set(labels)) == 4
    for m, path in zip(manifest, inputs):  # each output is its own input's
        with Image.open(out / m["outputs"][0]) as im:
            assert im.size == Image.open(path).size
    folder_run = segment(str(tmp_path), "--out", str(tmp_path / "tree2"), "--model", DEMO, "--resize", "config")
    assert folder_run.returncode == 0
    for sub in ("x", "y"):  # a folder given keeps its structure
        assert (tmp_path / "tree2" / sub / "img_labels.png").is_file()


@pytest.mark.parametrize("options, message", [
    (["--batch-size", "0"], "--batch-size"),
    (["--threshold", "2"], "--threshold"),
    (["--threshold", "-5"], "--threshold"),
    (["--show-threshold", "1.5"], "--show-threshold"),
    (["--window-overlap", "0.5"], "--sliding-window"),
    (["--task", "semantic", "--threshold", "0.5"], "semantic"),
    (["--task", "panoptic", "--show-threshold", "0.3"], "instance task"),
    (["--num-workers", "-1"], "--num-workers"),
    (["--frame-stride", "0"], "--frame-stride"),
    (["--max-pixels", "0"], "--max-pixels"),
])
def test_bad_options_are_one_line(tmp_path, options, message):
    from mask2former import cli

    Image.fromarray(street(32, 32, 0)).save(tmp_path / "a.png")
    res = _in_process(cli, [str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--model", DEMO, *options])
    assert res[0] == 1
    lines = [line for line in res[1].splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res[1]


def _in_process(cli, argv):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["segment", *argv])
    return code, err.getvalue()


def test_empty_folder_and_empty_glob_both_fail(tmp_path):
    (tmp_path / "empty").mkdir()
    for spec in (str(tmp_path / "empty"), str(tmp_path / "*.png")):
        res = segment(spec, "--out", str(tmp_path / "out"), "--model", DEMO)
        assert res.returncode == 1
        assert len(error_lines(res.stderr)) == 1 and spec in error_lines(res.stderr)[0]


def test_errors_print_above_the_bar(mixed, tmp_path):
    res = segment(str(mixed), str(tmp_path / "nothere.png"), "--out", str(tmp_path / "out"), "--model", DEMO,
                  "--resize", "config")
    assert res.returncode == 1
    assert len(error_lines(res.stderr)) == 2  # every error starts its own line, never inside the bar
    assert res.stderr.count("error:") == 2


def test_every_option_states_its_default():
    from mask2former.cli import build_parser

    parser = build_parser()
    seg = parser._subparsers._group_actions[0].choices["segment"]
    for action in seg._actions:
        if action.dest in ("help", "inputs") or action.required:
            continue
        assert action.help and "default" in action.help.lower(), action.option_strings


def test_instance_picture_hides_low_scores(tmp_path):
    """NAME_instances.json keeps every instance; labels/overlay/areas only those >= 0.5."""
    from pycocotools import mask as mask_utils

    Image.fromarray(street(96, 160, 3)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    res = segment(str(tmp_path / "a.png"), "--out", str(out), "--model", DEMO, "--task", "instance",
                  "--resize", "config")
    assert res.returncode == 0, res.stderr
    instances = json.loads((out / "a_instances.json").read_text())
    labels = np.array(Image.open(out / "a_labels.png"))
    painted = np.full(labels.shape, 255, np.uint8)
    for inst in reversed(instances):
        if inst["score"] >= 0.5:
            painted[mask_utils.decode(inst["segmentation"]).astype(bool)] = inst["category_id"]
    assert (painted == labels).all()
    assert any(inst["score"] < 0.5 for inst in instances)  # the low ones are kept in the JSON
    rows = json.loads((out / "a_areas.json").read_text())
    assert sum(r["pixels"] for r in rows if r["class_id"] < 0) == int((labels == 255).sum())


def test_decompression_bomb_limit(tmp_path):
    Image.fromarray(street(40, 40, 0)).save(tmp_path / "warn.png")  # 1600 px: over the limit, under twice it
    Image.fromarray(street(50, 50, 1)).save(tmp_path / "bomb.png")  # 2500 px: over twice the limit
    res = segment(str(tmp_path), "--out", str(tmp_path / "out"), "--model", DEMO, "--resize", "config",
                  "--max-pixels", "1000")
    assert res.returncode == 1
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "bomb.png" in errors[0] and "--max-pixels" in errors[0]
    assert "DecompressionBombWarning" not in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "out" / "warn_labels.png").is_file()


def test_too_large_for_memory_is_refused_before_running():
    """The memory check refuses an image whose estimate exceeds what is available, naming
    the file and --sliding-window; sliding windows shrink the estimate."""
    from mask2former.inference.memory import MemoryCheck, estimate_bytes
    from mask2former.segmenter import Segmenter

    plain = Segmenter(DEMO, task="semantic", resize="config")
    plain.processor.size = {"shortest_edge": 6000, "longest_edge": 8000}
    tiled = Segmenter(DEMO, task="semantic", resize="config", sliding_window=(512, 512))
    tiled.processor.size = plain.processor.size
    assert estimate_bytes(tiled, 6000, 8000) < estimate_bytes(plain, 6000, 8000)
    with pytest.raises(ValueError, match=r"aerial\.tif: too large .*--sliding-window"):
        MemoryCheck(plain, limit_bytes=2 * 2**30)("aerial.tif", 6000, 8000)
    plain.processor.size = {"shortest_edge": 256, "longest_edge": 1024}
    MemoryCheck(plain, limit_bytes=2 * 2**30)("small.png", 480, 640)  # fits: no error


def test_sliding_window_labels_never_hold_full_size_scores(one_thread):
    """Labels from class blocks resized one at a time (here one class per block) equal the
    argmax of the full (C, H, W) scores, and the Segmenter uses that path."""
    from mask2former import tta
    from mask2former.segmenter import Segmenter

    seg = Segmenter(DEMO, task="semantic", resize="config", sliding_window=(128, 128))
    rgb = street(150, 420, 5)  # resized up to 256 x 716 for the network: tiles, then resized back
    want = tta.labels_from_scores(tta.sliding_window_scores(seg, rgb, (128, 128)))
    got = tta.sliding_window_labels(seg, rgb, (128, 128), max_bytes=4 * 150 * 420)
    assert np.array_equal(got, want) and len(np.unique(want)) > 1
    assert np.array_equal(seg(rgb).labels, want)


def test_memory_check_runs_before_decoding(tmp_path):
    """The pipeline refuses a file from its header's size: the pixels are never decoded."""
    from mask2former.inference.inputs import InputItem
    from mask2former.inference.pipeline import Pipeline
    from mask2former.segmenter import Segmenter

    Image.fromarray(street(64, 96, 0)).save(tmp_path / "big.png")
    seen, failed, written = [], [], []

    def check(item, h, w):
        seen.append((h, w))
        raise ValueError(f"{item.path}: too large (test)")

    seg = Segmenter(DEMO, task="semantic", resize="config")
    Pipeline(seg, num_workers=0, check=check).run([InputItem(0, str(tmp_path / "big.png"), "big")],
                                                  lambda r, i: written.append(i), lambda i, m: failed.append(m))
    assert seen == [(64, 96)] and not written and failed == [f"{tmp_path / 'big.png'}: too large (test)"]
