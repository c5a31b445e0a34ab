"""Runtime parity that accounts for masked attention's threshold.

Each decoder layer attends only where the previous layer's mask logit (resized to the
attended level) is >= 0 (sigmoid >= 0.5). That is a hard threshold: a logit within float
rounding of 0 (1e-6 apart between two correct runtimes) flips one attention bit, and that
moves the later logits by far more than 1e-6. So a fixed logit bound cannot hold on every
input for any runtime that is not bit-identical to PyTorch. The check here proves what does
hold, and can fail:

- the exported graph also outputs every layer's attention mask ("probe" outputs);
- where the runtime's masks equal PyTorch's, its logits are within the bounds;
- where a bit flips, PyTorch's logit there is within ``FLIP_MARGIN`` of the threshold, and
  PyTorch run with the runtime's masks gives the runtime's logits within the same bounds;
- label maps after our post-processing stay >= 99.99 % equal either way.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mask2former import transformer_decoder
from mask2former.export import check_standard
from mask2former.export.onnx import _quiet
from mask2former.export.torch_export import example_pixels, export_program, exporting
from mask2former.processor import Mask2FormerImageProcessor

# |mask logit| below which a flipped attention bit is rounding, not an error. A flip means the
# runtime's logit there differs by at least this much; check_case allows the final mask
# logits mask_tol = 1e-3, and the same depth of rounding reaches the earlier layers' logits:
# Swin-L under ONNX Runtime flipped one at 1.008e-3 on an AMD EPYC (Zen 4, no AMX), where
# the Intel AMX machine stayed below 1e-3. Hence twice mask_tol.
FLIP_MARGIN = 2e-3
WORKER = os.path.join(os.path.dirname(__file__), "runtime_worker.py")


@contextlib.contextmanager
def recorded_masks(record: list, forced: Optional[list[Tensor]] = None) -> Iterator[None]:
    """Record each layer's attention mask (head 0: (B, Q, h*w) bool) and pre-threshold
    logits (B, Q, h*w) into ``record``; with ``forced``, the layers use those masks instead."""
    original = transformer_decoder.head_masks

    def head_masks(mask_logits: Tensor, size: tuple[int, int], heads: int, per_head: bool = True) -> Tensor:
        assert per_head, "the probe runs the exact fp32 path, whose masks are per head"
        blocked = original(mask_logits, size, heads)
        if forced is not None:
            blocked = forced[len(record)].repeat_interleave(heads, dim=0)
        small = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False).flatten(2)
        record.append((blocked[::heads], small))
        return blocked

    transformer_decoder.head_masks = head_masks
    try:
        yield
    finally:
        transformer_decoder.head_masks = original


class ProbeModule(nn.Module):
    """pixel_values -> (class logits, mask logits, layer 1's attention mask, ...)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, ...]:
        record: list = []
        with recorded_masks(record):
            out = self.model(pixel_values=pixel_values)
        return (out.class_queries_logits, out.masks_queries_logits, *(b for b, _ in record))


def export_probe(model: nn.Module, path: str) -> str:
    """The logits graph of ``export_onnx`` plus the attention masks as outputs."""
    import onnx

    layers = model.config.decoder_layers - 1
    names = ["class_queries_logits", "masks_queries_logits"] + [f"blocked_{i}" for i in range(layers)]
    pixels = example_pixels(model)
    with exporting(model), _quiet():
        program = export_program(ProbeModule(model), (pixels,))
        proto = torch.onnx.export(program, (pixels,), dynamo=True, opset_version=18, input_names=["pixel_values"],
                                  output_names=names, optimize=True, verbose=False).model_proto
    check_standard(proto)
    onnx.save_model(proto, path)
    return path


def torch_logits(model: nn.Module, x: Tensor):
    """Our model as exported: reference deformable attention, final prediction only."""
    saved = model.transformer_decoder.auxiliary_masks
    model.transformer_decoder.auxiliary_masks = False
    try:
        with torch.no_grad():
            return model(pixel_values=x)
    finally:
        model.transformer_decoder.auxiliary_masks = saved


def torch_reference(model: nn.Module, x: Tensor, forced: Optional[list[Tensor]] = None) -> dict:
    """:func:`torch_logits` with its attention masks."""
    record: list = []
    with recorded_masks(record, forced):
        out = torch_logits(model, x)
    return {"class_queries_logits": out.class_queries_logits, "masks_queries_logits": out.masks_queries_logits,
            "blocked": [b for b, _ in record], "small": [s for _, s in record]}


def run_worker(path: str, runtime: str, mode: str, tmp: str, cases: Optional[list[dict]] = None,
               images: Optional[list[str]] = None) -> list[dict[str, np.ndarray]]:
    """tests/runtime_worker.py in a subprocess; one dict of outputs per case (or image)."""
    request = {"onnx": path, "runtime": runtime, "mode": mode, "output": os.path.join(tmp, f"{runtime}-out.npz"),
               "images": images or []}
    if cases is not None:
        request["inputs"] = os.path.join(tmp, f"{runtime}-in.npz")
        np.savez(request["inputs"], **{f"{i}/{k}": v for i, feeds in enumerate(cases) for k, v in feeds.items()})
    request_path = os.path.join(tmp, f"{runtime}-request.json")
    with open(request_path, "w") as f:
        json.dump(request, f)
    r = subprocess.run([sys.executable, WORKER, request_path], capture_output=True, text=True, timeout=1800,
                       env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, f"{runtime} worker exited {r.returncode}: {r.stderr[-3000:]}"
    results: list[dict[str, np.ndarray]] = [{} for _ in range(len(cases) if cases is not None else len(images))]
    with np.load(request["output"]) as data:
        for key in data.files:
            case, name = key.split("/", 1)
            results[int(case)][name] = data[key]
    return results


def max_diff(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def check_case(model: nn.Module, x: Tensor, mask: Tensor, got: dict[str, np.ndarray], label: str,
               class_tol: float = 1e-4, mask_tol: float = 1e-3) -> dict:
    """One input: the assertions of the module docstring. Returns the figures measured."""
    ref = torch_reference(model, x)
    runtime_blocked = [torch.from_numpy(got[f"blocked_{i}"]) for i in range(len(ref["blocked"]))]
    flips = [r != b for r, b in zip(runtime_blocked, ref["blocked"])]
    flipped = sum(int(f.sum()) for f in flips)
    figures = {"case": label, "flips": flipped, "bits": sum(f.numel() for f in flips)}
    expected = ref
    if flipped:
        margin = max(s[f].abs().max().item() for s, f in zip(ref["small"], flips) if f.any())
        figures["flip_margin"] = margin
        assert margin <= FLIP_MARGIN, f"{label}: an attention bit flipped where the logit is {margin} from 0"
        expected = torch_reference(model, x, forced=runtime_blocked)
    for name, tol in (("class_queries_logits", class_tol), ("masks_queries_logits", mask_tol)):
        diff = max_diff(torch.from_numpy(got[name]), expected[name])
        figures[name] = diff
        assert diff <= tol, f"{label}: {name} differs by {diff} ({flipped} attention bits flipped)"
    processor = Mask2FormerImageProcessor()
    maps = []
    for out in (got, ref):
        fields = {k: torch.as_tensor(out[k]) for k in ("class_queries_logits", "masks_queries_logits")}
        maps.append(processor.post_process_semantic_segmentation(
            SimpleNamespace(**fields), pixel_mask=mask, resize_before_inference=False))
    figures["labels_equal"] = min((a == b).float().mean().item() for a, b in zip(*maps))
    assert figures["labels_equal"] >= 0.9999, figures
    positive = (ref["masks_queries_logits"] > 0).float().mean().item()
    assert 0.001 < positive < 0.999, positive  # masked attention really masks (part of each map)
    return figures

