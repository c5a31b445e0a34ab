"""Image loading and the image processor: pixel parity with transformers' PIL-backend
Mask2Former processor, config round trips, and the odd image files and modes."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from mask2former.image_io import ImageLoadError, load_image, to_rgb_array
from mask2former.processor import AutoImageProcessor, BatchFeature, Mask2FormerImageProcessor, resized_size

hf_pil = pytest.importorskip("transformers.models.mask2former.image_processing_pil_mask2former")
HFProcessor = hf_pil.Mask2FormerImageProcessorPil
logging.getLogger("transformers").setLevel(logging.ERROR)

RNG = np.random.default_rng(0)
SIZES = [(50, 70), (83, 41), (60, 90), (37, 120), (64, 64)]  # (60, 90): short side already 60
RGB = [RNG.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
SMALL = {"size": {"shortest_edge": 60, "longest_edge": 100}, "size_divisor": 32}


def hf_pixels(images, config, **kwargs):
    out = HFProcessor(**config)(images, return_tensors="pt", **kwargs)
    return out["pixel_values"].float(), out["pixel_mask"]


def assert_same(ours, theirs):
    values, mask = theirs
    assert ours.pixel_values.dtype == torch.float32 and ours.pixel_mask.dtype == torch.int64
    assert ours.pixel_values.shape == values.shape
    assert torch.equal(ours.pixel_values, values)  # bit-identical
    assert torch.equal(ours.pixel_mask, mask)


# -- parity with transformers -------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {},  # transformers' defaults: shortest 800 / longest 1333, size_divisor 32
        {"size": {"shortest_edge": 60, "longest_edge": 100}, "size_divisor": 0},
        SMALL,
        {"size": {"height": 96, "width": 128}, "size_divisor": 0},
        {"size": {"height": 90, "width": 100}, "size_divisor": 32},
        {"size": {"max_height": 80, "max_width": 90}, "size_divisor": 0},
        {"do_resize": False, "size_divisor": 0},
        {**SMALL, "resample": 3, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.5, 1.0]},
        {**SMALL, "do_normalize": False},
        {**SMALL, "do_rescale": False},
        {"size": 48, "max_size": 70, "size_divisor": 0},  # the legacy spelling
    ],
)
def test_pixel_values_match_transformers(config):
    images = [Image.fromarray(a) for a in RGB]
    assert_same(Mask2FormerImageProcessor(**config)(images), hf_pixels(images, config))
    # one image at a time too (no padding)
    assert_same(Mask2FormerImageProcessor(**config)(images[1]), hf_pixels(images[1], config))


def test_array_and_tensor_inputs_match_transformers():
    ours = Mask2FormerImageProcessor(**SMALL)
    assert_same(ours(RGB), hf_pixels(RGB, SMALL))  # HWC uint8 arrays
    chw = [torch.from_numpy(a).permute(2, 0, 1) for a in RGB]
    assert_same(ours(chw), hf_pixels(chw, SMALL))  # CHW uint8 tensors
    batch = np.stack([a[:30, :36] for a in RGB])  # a 4-D batch array
    assert_same(ours(batch), hf_pixels(list(batch), SMALL))
    # floats in [0, 1] are 8-bit values / 255 (transformers would rescale them twice)
    floats = [a.astype(np.float32) / 255 for a in RGB]
    assert_same(ours(floats), hf_pixels(RGB, SMALL))


def _modes():
    base = Image.fromarray(RGB[0])
    rgba = np.dstack([RGB[0], RNG.integers(0, 256, RGB[0].shape[:2], dtype=np.uint8)])
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    transparent = palette.copy()
    transparent.info["transparency"] = 3
    return {
        "L": base.convert("L"),
        "1": base.convert("1"),
        "RGBA": Image.fromarray(rgba),
        "LA": Image.fromarray(rgba).convert("LA"),
        "P": palette,
        "P+transparency": transparent,
        "CMYK": base.convert("CMYK"),
    }


@pytest.mark.parametrize("mode", list(_modes()))
def test_image_modes_match_transformers_rgb_conversion(mode):
    image = _modes()[mode]
    ours = Mask2FormerImageProcessor(**SMALL)(image)
    assert_same(ours, hf_pixels(image, SMALL, do_convert_rgb=True))


def test_sixteen_bit_images_are_scaled_not_clipped():
    values = RNG.integers(0, 65536, (50, 70), dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    eight_bit = np.repeat(np.round(values / 257).astype(np.uint8)[..., None], 3, axis=-1)
    ours = Mask2FormerImageProcessor(**SMALL)
    assert_same(ours(image), hf_pixels(eight_bit, SMALL))
    assert_same(ours(values), hf_pixels(eight_bit, SMALL))  # a uint16 array
    # transformers' own conversion clips at 255: a deliberate difference
    clipped, _ = hf_pixels(image, SMALL, do_convert_rgb=True)
    assert not torch.equal(ours(image).pixel_values, clipped)


def test_exif_rotation_is_applied(tmp_path):
    from transformers.image_utils import load_image as hf_load_image

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = tmp_path / "rotated.png"
    Image.fromarray(RGB[0]).save(path, exif=exif)
    upright = load_image(path)
    assert upright.size == (50, 70) and np.array_equal(np.asarray(upright), np.rot90(RGB[0], k=-1))
    expected = hf_pixels(hf_load_image(str(path)), SMALL)
    ours = Mask2FormerImageProcessor(**SMALL)
    assert_same(ours(str(path)), expected)
    assert_same(ours(Image.open(path)), expected)  # an opened, not yet rotated, image too


# -- config files -------------------------------------------------------------------------

HUB_STYLE = {
    "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48500001430511475, 0.4560000002384186, 0.4059999883174896],
    "image_processor_type": "Mask2FormerImageProcessor",
    "image_std": [0.2290000021457672, 0.2239999920129776, 0.22499999403953552],
    "ignore_index": 255, "num_labels": 133, "reduce_labels": False, "resample": 2,
    "rescale_factor": 0.00392156862745098, "size": {"height": 96, "width": 128}, "size_divisor": 32,
}


def test_config_round_trip_keeps_unknown_keys(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "preprocessor_config.json").write_text(json.dumps({**HUB_STYLE, "some_future_key": [1, 2]}))
    proc = Mask2FormerImageProcessor.from_pretrained(folder)
    assert proc.size == {"height": 96, "width": 128} and proc.ignore_index == 255 and proc.num_labels == 133
    assert proc.extra["some_future_key"] == [1, 2]
    saved = proc.save_pretrained(tmp_path / "out")
    data = json.loads(open(saved[0]).read())
    assert {k: data[k] for k in HUB_STYLE} == HUB_STYLE and data["some_future_key"] == [1, 2]
    assert Mask2FormerImageProcessor.from_pretrained(tmp_path / "out") == proc
    # a json path works, and keyword arguments override the file
    again = Mask2FormerImageProcessor.from_pretrained(folder / "preprocessor_config.json", size_divisor=0)
    assert again.size_divisor == 0
    assert isinstance(AutoImageProcessor.from_pretrained(folder, use_fast=True), Mask2FormerImageProcessor)


def test_transformers_reads_what_we_write(tmp_path):
    ours = Mask2FormerImageProcessor(**HUB_STYLE)
    ours.save_pretrained(tmp_path)
    theirs = HFProcessor.from_pretrained(str(tmp_path))
    images = [Image.fromarray(a) for a in RGB[:3]]
    out = theirs(images, return_tensors="pt")
    assert_same(ours(images), (out["pixel_values"], out["pixel_mask"]))


def test_legacy_keys():
    proc = Mask2FormerImageProcessor(size=384, max_size=640, reduce_labels=True)
    assert proc.size == {"shortest_edge": 384, "longest_edge": 640} and proc.do_reduce_labels
    assert "max_size" not in proc.to_dict() and proc.to_dict()["reduce_labels"] is True
    with pytest.raises(ValueError):
        Mask2FormerImageProcessor(size={"longest_edge": 5, "width": 3})


def test_missing_config_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="preprocessor_config.json"):
        Mask2FormerImageProcessor.from_pretrained(tmp_path)


# -- outputs --------------------------------------------------------------------------------


def test_batch_feature_and_padding():
    proc = Mask2FormerImageProcessor(**SMALL)
    inputs = proc([Image.fromarray(a) for a in RGB[:2]])
    assert isinstance(inputs, BatchFeature) and set(inputs) == {"pixel_values", "pixel_mask"}
    assert inputs.pixel_values is inputs["pixel_values"]
    assert inputs.original_sizes == [(50, 70), (83, 41)]
    assert inputs.resized_sizes == [resized_size(50, 70, SMALL["size"], 32), resized_size(83, 41, SMALL["size"], 32)]
    for (h, w), mask in zip(inputs.resized_sizes, inputs.pixel_mask):
        assert mask[:h, :w].all() and mask.sum() == h * w
    assert (inputs.pixel_values[0][:, :, inputs.resized_sizes[0][1]:] == 0).all()  # zero padding

    def model(pixel_values, pixel_mask):
        return pixel_values.shape, pixel_mask.shape

    assert model(**inputs) == (inputs.pixel_values.shape, inputs.pixel_mask.shape)
    half = inputs.to(torch.float16)
    assert half.pixel_values.dtype == torch.float16 and half.pixel_mask.dtype == torch.int64
    assert half.original_sizes == inputs.original_sizes
    assert inputs.to("cpu").pixel_values.device.type == "cpu"
    as_np = proc(RGB[0], return_tensors="np")
    assert isinstance(as_np["pixel_values"], np.ndarray)
    padded = proc(RGB[:2], pad_to_multiple_of=48)
    assert all(s % 48 == 0 for s in padded.pixel_values.shape[-2:])
    fixed = proc(RGB[:2], pad_size={"height": 200, "width": 150})
    assert fixed.pixel_values.shape[-2:] == (200, 150)
    with pytest.raises(TypeError):
        proc(RGB[0], colour="blue")
    with pytest.raises(ValueError):
        proc([])


# -- image loading --------------------------------------------------------------------------


def test_unreadable_files_give_one_line_errors(tmp_path):
    Image.fromarray(RGB[0]).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image at all")
    cases = {"truncated.jpg": "truncated", "empty.png": "empty", "text.png": "not an image", "missing.png": "no such",
             ".": "directory"}
    for name, words in cases.items():
        path = tmp_path / name
        with pytest.raises(ImageLoadError) as err:
            load_image(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and words in message
        assert isinstance(err.value, OSError) and err.value.path == str(path)


def test_decompression_bomb_limit_is_kept(tmp_path, monkeypatch):
    Image.fromarray(RGB[0]).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 3500 pixels > 2 x 100
    with pytest.raises(ImageLoadError, match="MAX_IMAGE_PIXELS"):
        load_image(tmp_path / "big.png")


def test_rgb_conversion_rules():
    from transformers.image_transforms import convert_to_rgb

    rgba = np.dstack([RGB[1], RNG.integers(0, 256, RGB[1].shape[:2], dtype=np.uint8)])
    assert np.array_equal(to_rgb_array(rgba), convert_to_rgb(rgba, return_numpy=True))
    assert np.array_equal(to_rgb_array(Image.fromarray(rgba)), convert_to_rgb(Image.fromarray(rgba), return_numpy=True))
    gray = RGB[0][..., 0]
    assert np.array_equal(to_rgb_array(gray), np.repeat(gray[..., None], 3, axis=-1))
    assert np.array_equal(to_rgb_array(gray), to_rgb_array(Image.fromarray(gray)))
    assert np.array_equal(to_rgb_array(np.dstack([gray, np.full_like(gray, 255)])), to_rgb_array(gray))  # LA
    sixteen = np.array([[0, 128, 129, 257, 65535]], dtype=np.uint16)
    assert to_rgb_array(sixteen)[0, :, 0].tolist() == [0, 0, 1, 1, 255]
    assert to_rgb_array(Image.fromarray(sixteen.astype(np.int32)))[0, :, 0].tolist() == [0, 0, 1, 1, 255]  # mode I
    mode_f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert to_rgb_array(mode_f)[0, :, 0].tolist() == [0, 128, 255]
    assert to_rgb_array(np.array([[True, False]]))[0, :, 0].tolist() == [255, 0]
    chw = torch.from_numpy(RGB[0]).permute(2, 0, 1)
    assert np.array_equal(to_rgb_array(chw), RGB[0])
    assert np.array_equal(to_rgb_array(chw.float() / 255), RGB[0])
    assert np.array_equal(to_rgb_array(torch.from_numpy(RGB[0])), RGB[0])  # HWC tensor
    assert np.array_equal(to_rgb_array(np.ascontiguousarray(RGB[0].transpose(2, 0, 1))), RGB[0])  # CHW array
    with pytest.raises(ValueError):
        to_rgb_array(np.full((4, 4, 3), 2.5, dtype=np.float32))
    with pytest.raises(ValueError):
        to_rgb_array(np.zeros((5, 6, 7), dtype=np.uint8))
    with pytest.raises(TypeError):
        to_rgb_array("not a path".encode())
    assert load_image(RGB[0]).mode == "RGB" and load_image(Image.fromarray(rgba)).mode == "RGB"
