"""A seeded generator of small street-like scenes, written in the plain folder layout
(see ``folder.py``), for tests and for checking that training learns something quickly.

Stuff (road, sidewalk, building, vegetation, sky) is laid out as a horizon scene; things (car,
person, sign) are random shapes placed with rough perspective, several per image, drawn far to
near so nearer ones occlude. Every class has its own colour and texture plus noise, so a small
model can learn it. Some images carry an ignore region (255), like Cityscapes' ego vehicle.

    python -m mask2former.data.synthetic OUT --train 200 --val 50 --size 256 256 --seed 0
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

IGNORE = 255
# (name, colour, isthing); a class's id is its position.
CLASSES: list[tuple[str, tuple[int, int, int], bool]] = [
    ("road", (128, 64, 128), False),
    ("sidewalk", (244, 35, 232), False),
    ("building", (70, 70, 70), False),
    ("vegetation", (107, 142, 35), False),
    ("sky", (70, 130, 180), False),
    ("car", (0, 0, 142), True),
    ("person", (220, 20, 60), True),
    ("sign", (220, 220, 0), True),
]
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, CAR, PERSON, SIGN = range(len(CLASSES))
_HOOD_COLOR = (25, 25, 25)
# Per-class pixel noise (std), so textures differ in grain as well as colour.
_NOISE = np.array([6, 10, 8, 22, 3, 8, 10, 5, 4], dtype=np.float32)


def _patterns(h: int, w: int, horizon: int) -> np.ndarray:
    """(C + 1, H, W) additive texture per class; the last row is the ignore region."""
    # 1-D coordinates broadcast against each other: cheaper than full grids.
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    p = np.zeros((len(CLASSES) + 1, h, w), dtype=np.float32)
    p[ROAD] = np.where((np.abs(x - w / 2) < 1.5) & ((y // 6) % 2 == 0) & (y > horizon), 90, 0)  # lane dashes
    p[SIDEWALK] = np.where((x % 12 < 1) | (y % 8 < 1), -45, 0)  # tiles
    p[BUILDING] = np.where(((x % 10) < 5) & ((y % 12) < 6), -35, 15)  # windows
    p[VEGETATION] = 20 * np.cos(y * 0.7) * np.sin(x * 0.9)
    p[SKY] = 50 * (y / max(horizon, 1)).clip(0, 1)  # lighter towards the horizon
    p[CAR] = np.where((y % 6) < 2, -25, 10)
    p[PERSON] = np.where((x % 4) < 2, -30, 10)
    return p


def _ground_x(horizon: int, h: int, vx: float, half_top: float, left: float, right: float, y: float) -> tuple[float, float]:
    t = (y - horizon) / max(h - horizon, 1)
    return vx - half_top + t * (left - vx + half_top), vx + half_top + t * (right - vx - half_top)


def render_scene(rng: np.random.Generator, size: tuple[int, int] = (256, 256)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: (image HxWx3 uint8, class ids HxW uint8, instance ids HxW uint8, 0 = none)."""
    h, w = size
    horizon = int(h * rng.uniform(0.35, 0.55))
    label = Image.new("L", (w, h), SKY)
    inst = Image.new("L", (w, h), 0)
    dl, di = ImageDraw.Draw(label), ImageDraw.Draw(inst)

    # Buildings: a skyline of rectangles standing on the horizon.
    x = rng.uniform(-0.1, 0.1) * w
    while x < w:
        bw = rng.uniform(0.08, 0.25) * w
        if rng.random() < 0.8:
            dl.rectangle([x, rng.uniform(0.05, 0.8) * horizon, x + bw, horizon + 2], fill=BUILDING)
        x += bw + rng.uniform(0, 0.05) * w
    # Trees and bushes along the horizon.
    for _ in range(int(rng.integers(1, 5))):
        cx, r = rng.uniform(0, w), rng.uniform(0.04, 0.12) * w
        cy = horizon - r * rng.uniform(0.2, 1.0)
        dl.ellipse([cx - r, cy - r * 1.2, cx + r, cy + r], fill=VEGETATION)
    # Ground: sidewalk everywhere below the horizon, road as a trapezoid to a vanishing point.
    dl.rectangle([0, horizon, w, h], fill=SIDEWALK)
    vx, half_top = rng.uniform(0.35, 0.65) * w, rng.uniform(0.02, 0.06) * w
    left, right = rng.uniform(-0.3, 0.2) * w, rng.uniform(0.8, 1.3) * w
    dl.polygon([(vx - half_top, horizon), (vx + half_top, horizon), (right, h), (left, h)], fill=ROAD)

    # Things, drawn far (small, near the horizon) to near (large, low in the image).
    things = []
    for _ in range(int(rng.integers(1, 6))):
        things.append((CAR, rng.uniform(horizon + 0.1 * (h - horizon), h * 1.05)))
    for _ in range(int(rng.integers(1, 6))):
        things.append((PERSON, rng.uniform(horizon + 0.05 * (h - horizon), h * 1.02)))
    for _ in range(int(rng.integers(0, 4))):
        things.append((SIGN, rng.uniform(0.2 * h, horizon + 0.15 * (h - horizon))))
    things.sort(key=lambda t: (t[0] == SIGN, t[1]))  # signs hang in front of everything
    for k, (cls, yb) in enumerate(things, start=1):
        s = float(np.clip((yb - horizon) / max(h - horizon, 1), 0.05, 1.2))
        ids = dict(fill=cls), dict(fill=k)
        if cls == CAR:
            cw = w * (0.08 + 0.25 * s)
            ch = cw * rng.uniform(0.45, 0.65)
            lo, hi = _ground_x(horizon, h, vx, half_top, left, right, yb)
            x0 = rng.uniform(lo, max(lo, hi - cw))
            for d, f in zip((dl, di), ids):
                d.rectangle([x0, yb - 0.6 * ch, x0 + cw, yb], **f)
                d.polygon([(x0 + 0.18 * cw, yb - ch), (x0 + 0.8 * cw, yb - ch), (x0 + 0.95 * cw, yb - 0.6 * ch), (x0 + 0.05 * cw, yb - 0.6 * ch)], **f)
        elif cls == PERSON:
            ph = h * (0.06 + 0.3 * s)
            pw, r = ph * rng.uniform(0.25, 0.35), ph * 0.11
            x0 = rng.uniform(0, w - pw)
            for d, f in zip((dl, di), ids):
                d.ellipse([x0 + pw / 2 - r, yb - ph, x0 + pw / 2 + r, yb - ph + 2 * r], **f)
                d.polygon([(x0, yb - ph + 2 * r), (x0 + pw, yb - ph + 2 * r), (x0 + 0.85 * pw, yb), (x0 + 0.15 * pw, yb)], **f)
        else:
            r = min(h, w) * rng.uniform(0.03, 0.08)
            cx, cy = rng.uniform(r, w - r), yb
            sides = (0, 3, 4, 8)[int(rng.integers(4))]  # disc, triangle, diamond or octagon
            angle = float(rng.uniform(0, 360))
            for d, f in zip((dl, di), ids):
                if sides == 0:
                    d.ellipse([cx - r, cy - r, cx + r, cy + r], **f)
                else:
                    d.regular_polygon((cx, cy, r), sides, rotation=angle, **f)
    # Sometimes an ego-vehicle hood at the bottom: ignored in training and evaluation.
    if rng.random() < 0.3:
        hood = h * rng.uniform(0.05, 0.12)
        for d, f in zip((dl, di), (dict(fill=IGNORE), dict(fill=0))):
            d.ellipse([-0.2 * w, h - hood, 1.2 * w, h + hood], **f)

    cls = np.asarray(label, dtype=np.uint8)
    ins = np.asarray(inst, dtype=np.uint8)
    idx = np.where(cls == IGNORE, len(CLASSES), cls).astype(np.int64)
    base = np.array([c for _, c, _ in CLASSES] + [_HOOD_COLOR], dtype=np.float32)
    base = base + rng.normal(0, 8, size=base.shape)  # per-image colour drift
    texture = np.take_along_axis(_patterns(h, w, horizon), idx[None], 0)[0]
    img = base[idx] + texture[..., None]
    inst_shift = rng.normal(0, 12, size=(len(things) + 1, 3)).astype(np.float32)  # per-instance tint
    inst_shift[0] = 0
    img += inst_shift[ins]
    img += rng.standard_normal(img.shape, dtype=np.float32) * _NOISE[idx][..., None]
    img += rng.uniform(-15, 15)  # global brightness
    return np.clip(img, 0, 255).astype(np.uint8), cls, ins


def class_list() -> list[dict]:
    return [{"id": i, "name": n, "color": list(c), "isthing": t} for i, (n, c, t) in enumerate(CLASSES)]


def _save_png(array: np.ndarray, path: str) -> None:
    Image.fromarray(array).save(path, compress_level=1)


def generate(root: str | os.PathLike, num_train: int, num_val: int, size: tuple[int, int] = (256, 256), seed: int = 0) -> None:
    """Write ``num_train`` + ``num_val`` scenes under ``root``. Scene ``i`` of a split depends only
    on ``(seed, split, i)``: the same seed gives byte-identical files, and more images extend a
    smaller set instead of changing it."""
    root = os.fspath(root)
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        for sub in ("images", "labels", "instances"):
            os.makedirs(os.path.join(root, sub, split), exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            image, label, inst = render_scene(rng, size)
            name = f"scene_{i:05d}.png"
            _save_png(image, os.path.join(root, "images", split, name))
            _save_png(label, os.path.join(root, "labels", split, name))
            _save_png(inst, os.path.join(root, "instances", split, name))
    meta = {"classes": class_list(), "ignore_value": IGNORE}
    with open(os.path.join(root, "classes.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mask2former.data.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output folder")
    parser.add_argument("--train", type=int, default=200, help="number of training images")
    parser.add_argument("--val", type=int, default=50, help="number of validation images")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    generate(args.out, args.train, args.val, tuple(args.size), args.seed)
    print(f"wrote {args.train} train and {args.val} val images to {args.out}")


if __name__ == "__main__":
    main()
