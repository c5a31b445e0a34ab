"""``mask2former serve`` as a real subprocess on loopback with the demo model: the unchanged
Hugging Face client, the native outputs against ``segment``'s files, every kind of bad input,
auth, a full queue, SIGTERM with requests in flight, and a bounded load test."""
from __future__ import annotations

import base64
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from mask2former import Segmenter
from mask2former.outputs import encode_png
from serve_server import DEMO_MODEL, ROOT, STREET, serve

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MAX_BYTES = 3_000_000
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve("--max-bytes", str(MAX_BYTES), "--max-pixels", str(MAX_PIXELS),
               log_dir=str(tmp_path_factory.mktemp("log"))) as s:
        yield s
        assert s.proc.poll() is None, s.log()  # nothing took it down


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter(DEMO_MODEL, device="cpu")


def png_bytes(array: np.ndarray) -> bytes:
    return encode_png(array)


def small_image(seed: int = 0, size=(96, 160)) -> bytes:
    rng = np.random.default_rng(seed)
    return png_bytes(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8))


def decode_mask(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        assert im.mode == "L"
        return np.array(im)


# -- the Hugging Face client, unchanged ---------------------------------------------------------


def test_hf_client_semantic_round_trip(server, segmenter):
    from huggingface_hub import InferenceClient

    expected = segmenter(STREET)
    out = InferenceClient(base_url=server.url).image_segmentation(STREET)  # raw bytes, no parameters
    classes = sorted(int(c) for c in np.unique(expected.labels))
    assert [e.label for e in out] == [expected.id2label[c] for c in classes]
    for element, c in zip(out, classes):
        assert element.score is None
        assert element.mask.size == (expected.labels.shape[1], expected.labels.shape[0])
        np.testing.assert_array_equal(np.array(element.mask), (expected.labels == c).astype(np.uint8) * 255)


@pytest.mark.parametrize("subtask", ["panoptic", "instance"])
def test_hf_client_parameters_round_trip(server, segmenter, subtask):
    from huggingface_hub import InferenceClient

    params = dict(threshold=0.3, mask_threshold=0.4, overlap_mask_area_threshold=0.7)
    expected = segmenter.with_options(subtask, threshold=0.3, overlap_threshold=0.7, mask_threshold=0.4)(STREET)
    # parameters set: the client sends base64 JSON
    out = InferenceClient(base_url=server.url).image_segmentation(STREET, subtask=subtask, **params)
    assert len(out) == len(expected.segments) > 0
    names = expected.id2label
    for i, (element, seg) in enumerate(zip(out, expected.segments)):
        assert element.label == names[seg["label_id"]]
        assert element.score == pytest.approx(seg["score"], abs=1e-4)
        want = expected.segment_ids == seg["id"] if subtask == "panoptic" else expected.instance_masks[i]
        np.testing.assert_array_equal(np.array(element.mask) > 0, want)


def test_hf_client_error_message(server):
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as info:
        InferenceClient(base_url=server.url).image_segmentation(b"certainly not an image")
    assert info.value.response.status_code == 400
    assert "not an image" in info.value.response.json()["error"]


# -- native outputs equal segment's files -----------------------------------------------------


@pytest.mark.parametrize("task", ["semantic", "panoptic", "instance"])
def test_native_outputs_equal_segment_files(server, tmp_path, task):
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "mask2former.cli", "segment", STREET, "--model", DEMO_MODEL,
                          "--task", task, "--out", str(out)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT})
    assert res.returncode == 0, res.stderr
    with open(STREET, "rb") as f:
        image = f.read()
    files = {"labels.png": "street_labels.png", "overlay.png": "street_overlay.png",
             "areas.csv": "street_areas.csv", "areas.json": "street_areas.json"}
    if task == "panoptic":
        files.update({"panoptic.png": "street_panoptic.png", "panoptic.json": "panoptic.json"})
    if task == "instance":
        files["instances.json"] = "street_instances.json"
    for output, name in files.items():
        r = httpx.post(f"{server.url}/v1/segment/{output}", params={"task": task},
                       files={"image": ("street.png", image, "image/png")}, timeout=120)
        assert r.status_code == 200, (output, r.text)
        assert r.content == (out / name).read_bytes(), output
    # the raw-body form and the JSON summary say the same
    r = httpx.post(f"{server.url}/v1/segment", params={"task": task, "name": "street"}, content=image,
                   headers={"content-type": "image/png"}, timeout=120)
    assert r.status_code == 200, r.text
    summary = r.json()
    assert base64.b64decode(summary["labels_png"]) == (out / "street_labels.png").read_bytes()
    assert summary["areas"] == json.loads((out / "street_areas.json").read_text())
    assert summary["image"] == {"name": "street", "width": 1024, "height": 512}
    if task == "panoptic":
        written = json.loads((out / "panoptic.json").read_text())
        assert summary["segments_info"] == written["annotations"][0]["segments_info"]
    if task == "instance":
        assert summary["instances"] == json.loads((out / "street_instances.json").read_text())


def test_model_description(server):
    r = httpx.get(server.url + "/v1/model")
    assert r.status_code == 200
    card = r.json()
    assert card["task"] == "semantic" and card["precision"]["used"] == "fp32"
    assert [c["name"] for c in card["classes"]] == ["road", "sidewalk", "building", "vegetation", "sky",
                                                    "car", "person", "sign"]
    assert card["test_size"] == {"shortest_edge": 256, "longest_edge": 1024}
    assert "Swin" in card["architecture"]["backbone"]


def test_operations_endpoints(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}
    assert httpx.get(server.url + "/openapi.json").json()["paths"]["/v1/segment/{output}"]
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert httpx.get(server.url + "/static/app.js").status_code == 200
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2f..%2fcli.py"):
        assert httpx.get(server.url + path).status_code == 404, path  # no file outside the page's assets
    httpx.post(server.url + "/", content=small_image(), headers={"content-type": "image/png"}, timeout=60)
    metrics = httpx.get(server.url + "/metrics").text
    for name in ("mask2former_requests_total{", "mask2former_request_seconds_bucket{", "mask2former_batch_size_bucket{",
                 "mask2former_queue_depth "):
        assert name in metrics
    assert 'path="/",status="200"' in metrics
    log_lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(line["path"] == "/healthz" and line["status"] == 200 for line in log_lines)


# -- bad input: one JSON error, the right status, the next request served ----------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 60000) -> bytes:
    """A tiny file whose header claims side x side pixels."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + _png_chunk(b"IEND", b""))


def _bad_requests():
    street = open(STREET, "rb").read()
    png = {"content-type": "image/png"}
    js = {"content-type": "application/json"}
    big = png_bytes(np.zeros((1100, 1000, 3), dtype=np.uint8))  # 1.1 MP, a small file
    return [
        ("not an image", "/", dict(content=b"hello world", headers=png), 400),
        ("truncated", "/", dict(content=street[: len(street) // 2], headers=png), 400),
        ("empty", "/", dict(content=b"", headers=png), 400),
        ("empty native", "/v1/segment", dict(content=b"", headers=png), 400),
        ("over the byte limit", "/", dict(content=b"\0" * (MAX_BYTES + 1), headers=png), 413),
        ("over the byte limit, chunked", "/v1/segment",
         dict(content=iter([b"\0" * 1_000_000] * 4), headers=png), 413),
        ("over the pixel limit", "/v1/segment/labels.png", dict(content=big, headers=png), 413),
        ("decompression bomb", "/", dict(content=bomb_png(), headers=png), 413),
        ("unsupported media type", "/", dict(content=b"x", headers={"content-type": "text/plain"}), 415),
        ("unsupported media type native", "/v1/segment",
         dict(content=b"x", headers={"content-type": "text/html"}), 415),
        ("malformed JSON", "/", dict(content=b'{"inputs": ', headers=js), 400),
        ("JSON not an object", "/", dict(content=b"[1, 2]", headers=js), 422),
        ("malformed base64", "/", dict(json={"inputs": "@@not base64@@", "parameters": {"threshold": 0.5}}), 400),
        ("base64 of a non-image", "/", dict(json={"inputs": base64.b64encode(b"abc").decode()}), 400),
        ("inputs naming a server file", "/", dict(json={"inputs": "/etc/passwd"}), 422),
        ("inputs naming a URL", "/", dict(json={"inputs": "http://127.0.0.1/x.png"}), 422),
        ("unknown parameter", "/", dict(json={"inputs": base64.b64encode(street).decode(),
                                               "parameters": {"top_k": 3}}), 422),
        ("parameter of the wrong type", "/", dict(json={"inputs": base64.b64encode(street).decode(),
                                                          "parameters": {"threshold": "high"}}), 422),
        ("threshold out of range", "/", dict(json={"inputs": base64.b64encode(street).decode(),
                                                     "parameters": {"mask_threshold": 1.0}}), 422),
        ("unknown subtask", "/", dict(json={"inputs": base64.b64encode(street).decode(),
                                             "parameters": {"subtask": "depth"}}), 422),
        ("unknown task native", "/v1/segment?task=depth", dict(content=street, headers=png), 422),
        ("unknown query parameter", "/v1/segment?colour=red", dict(content=street, headers=png), 422),
        ("query parameter of the wrong type", "/v1/segment?threshold=abc", dict(content=street, headers=png), 422),
        ("unknown output", "/v1/segment/labels.jpg", dict(content=street, headers=png), 404),
        ("output of another task", "/v1/segment/instances.json", dict(content=street, headers=png), 422),
        ("multipart without a file", "/v1/segment", dict(files={"image": (None, "street.png")}), 422),
        ("malformed multipart", "/v1/segment",
         dict(content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}), 422),
    ]


def test_bad_inputs_get_their_status_and_the_server_goes_on(server, segmenter):
    good = small_image(seed=3)
    expected = segmenter(np.array(Image.open(io.BytesIO(good))))
    for what, path, kwargs, status in _bad_requests():
        r = httpx.post(server.url + path, timeout=120, **kwargs)
        assert r.status_code == status, (what, r.status_code, r.text)
        body = r.json()
        assert set(body) == {"error"} and isinstance(body["error"], str) and "\n" not in body["error"], (what, body)
        ok = httpx.post(server.url + "/v1/segment/labels.png", content=good, headers={"content-type": "image/png"},
                        timeout=120)
        assert ok.status_code == 200, (what, ok.text)
        np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(ok.content))), expected.labels)
    assert "Traceback" not in server.log()


# -- auth, full queue, SIGTERM -------------------------------------------------------------------


def test_api_key_and_full_queue(tmp_path):
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    image = small_image(seed=1)
    with serve("--api-key", "s3cret", "--max-batch-size", "1", "--queue-size", "1", log_dir=str(tmp_path)) as s:
        png = {"content-type": "image/png"}
        assert httpx.post(s.url + "/", content=image, headers=png, timeout=60).status_code == 401
        assert httpx.get(s.url + "/v1/model").status_code == 401
        wrong = httpx.post(s.url + "/", content=image, headers={**png, "authorization": "Bearer nope"}, timeout=60)
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert httpx.get(s.url + "/healthz").status_code == 200  # probes need no key
        with pytest.raises(HfHubHTTPError):
            InferenceClient(base_url=s.url, token="nope").image_segmentation(image)
        assert InferenceClient(base_url=s.url, token="s3cret").image_segmentation(image)

        auth = {**png, "authorization": "Bearer s3cret"}
        statuses, lock = [], threading.Lock()

        def call() -> None:
            r = httpx.post(s.url + "/", content=image, headers=auth, timeout=120)
            with lock:
                statuses.append((r.status_code, r.headers.get("retry-after")))

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(c for c, _ in statuses)
        assert set(codes) == {200, 503}, codes  # one running + one queued at a time; the rest told to retry
        assert all(ra is not None and int(ra) >= 1 for c, ra in statuses if c == 503)
        assert httpx.post(s.url + "/", content=image, headers=auth, timeout=60).status_code == 200


def test_sigterm_finishes_requests_in_flight(tmp_path, segmenter):
    images = [small_image(seed=10 + i, size=(120 + 8 * i, 200)) for i in range(4)]
    expected = [segmenter(np.array(Image.open(io.BytesIO(b)))).labels for b in images]
    with serve("--max-batch-size", "1", log_dir=str(tmp_path)) as s:
        answers: dict[int, httpx.Response] = {}

        def call(i: int) -> None:
            answers[i] = httpx.post(s.url + "/v1/segment/labels.png", content=images[i],
                                    headers={"content-type": "image/png"}, timeout=120)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(images))]
        for t in threads:
            t.start()
        # SIGTERM once requests wait in the queue (one is running then)
        while "mask2former_queue_depth 0" in httpx.get(s.url + "/metrics").text:
            assert any(t.is_alive() for t in threads), "requests finished before the signal"
            time.sleep(0.01)
        assert s.stop() == 0, s.log()
        for t in threads:
            t.join()
        assert sorted(answers) == list(range(len(images)))
        for i, r in answers.items():
            assert r.status_code == 200, r.text
            np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(r.content))), expected[i])
        with pytest.raises(httpx.TransportError):
            httpx.get(s.url + "/healthz", timeout=5)


# -- load, from a second process ----------------------------------------------------------------


def _load_test(server_url: str, segmenter, tmp_path, requests: int, concurrency: int) -> str:
    rng = np.random.default_rng(0)
    street = np.array(Image.open(STREET).convert("RGB"))
    crops = [street, street[:, :512], street[64:448, 100:740]]  # three processed sizes
    paths = []
    for i, crop in enumerate(crops):
        noisy = np.clip(crop.astype(np.int16) + rng.integers(-8, 9, crop.shape), 0, 255).astype(np.uint8)
        path = tmp_path / f"load{i}.png"
        Image.fromarray(noisy).save(path)
        segmenter(str(path)).save_labels(str(tmp_path / f"load{i}_expected.png"))
        paths.append(str(path))
    res = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "serve_load.py"), server_url,
                          "--requests", str(requests), "--concurrency", str(concurrency), *paths],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    print(res.stdout)
    return res.stdout


def test_load_small(server, segmenter, tmp_path):
    out = _load_test(server.url, segmenter, tmp_path, requests=16, concurrency=8)
    assert "16 ok, 0 wrong, 0 failed" in out


@pytest.mark.slow
def test_load_200_at_concurrency_16(server, segmenter, tmp_path):
    out = _load_test(server.url, segmenter, tmp_path, requests=200, concurrency=16)
    assert "200 ok, 0 wrong, 0 failed" in out


# -- unusual images read as segment reads them --------------------------------------------------


def test_unusual_images_equal_segment(server, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    street = Image.open(STREET).convert("RGB").crop((0, 0, 640, 400))
    rgba = street.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(street.size))
    rgba.save(folder / "rgba.png")
    gray16 = (np.asarray(street.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "gray16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the pixels must be turned upright first
    street.save(folder / "rotated.jpg", exif=exif, quality=92)
    street.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "mask2former.cli", "segment", str(folder), "--model", DEMO_MODEL,
                          "--out", str(out), "--no-overlay"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT})
    assert res.returncode == 0, res.stderr
    for path in sorted(folder.iterdir()):
        r = httpx.post(server.url + "/v1/segment/labels.png", files={"image": (path.name, path.read_bytes())},
                       timeout=120)
        assert r.status_code == 200, (path.name, r.text)
        assert r.content == (out / f"{path.stem}_labels.png").read_bytes(), path.name


# -- the batcher and the timeout, in process --------------------------------------------------


def test_batches_group_by_processed_size_and_options(segmenter):
    from mask2former.serve.batching import Batcher

    rng = np.random.default_rng(5)
    sizes = [(100, 160), (200, 160), (100, 160), (100, 160), (200, 160)]
    images = [rng.integers(0, 256, size=(*s, 3), dtype=np.uint8) for s in sizes]
    panoptic = segmenter.with_options("panoptic")
    batches: list[int] = []
    batcher = Batcher(max_batch_size=2, max_wait_s=0.05, queue_size=16, on_batch=lambda n, s: batches.append(n))
    futures = [batcher.submit(im, segmenter, "semantic") for im in images]
    futures.append(batcher.submit(images[0], panoptic, "panoptic"))
    cancelled = batcher.submit(images[1], segmenter, "semantic")
    cancelled.cancel()  # a request that timed out while queued never runs
    batcher.start()  # everything is queued before the model thread looks
    results = [f.result(timeout=300) for f in futures]
    batcher.stop(60)
    # oldest first: two of the small size, both large ones, the last small one, the panoptic one
    assert batches == [2, 2, 1, 1]
    for im, r in zip(images, results[:-1]):
        np.testing.assert_array_equal(r.labels, segmenter(im).labels)
    assert results[-1].task == "panoptic"
    np.testing.assert_array_equal(results[-1].segment_ids, panoptic(images[0]).segment_ids)


def test_request_timeout_answers_504(segmenter):
    from fastapi.testclient import TestClient

    from mask2former.serve import ServeConfig, build_app

    app = build_app(segmenter, ServeConfig(timeout_s=0.0, access_log=False))
    with TestClient(app) as client:
        r = client.post("/", content=small_image(), headers={"content-type": "image/png"})
        assert r.status_code == 504 and "timeout" in r.json()["error"]
        assert client.get("/healthz").status_code == 200
