"""Hugging Face format: ``config.json`` + ``model.safetensors`` (optionally sharded) or
``pytorch_model.bin``, in a local folder or a hub repository."""
from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import Tensor, nn

from ..io import atomic_path
from .hf_names import hf_to_ours, ours_to_hf
from .hub import CheckpointNotFoundError, resolve_file
from .safetensors_reader import LazyTensor

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not fit the network; the message lists every offender."""


def _read_file(path: str, lazy: bool = False) -> dict[str, Any]:
    try:
        if path.endswith(".safetensors"):
            # Not safetensors' load_file: its tensors map the file, and copying them into a
            # model holds the weights twice at the peak (see safetensors_reader).
            from .safetensors_reader import read_header, read_safetensors

            return read_header(path) if lazy else read_safetensors(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors' and pickle's errors alike: name the file, no traceback
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        raise CheckpointMismatchError(
            f"{path}: cannot read the weights, the file is damaged or incomplete ({size:,} bytes; an "
            f"interrupted download or copy?): {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None


def read_hf_state_dict(name_or_path: str | os.PathLike, lazy: bool = False, **hub_kwargs: Any) -> dict[str, Any]:
    """All tensors of a Hugging Face checkpoint, under their Hugging Face names. ``lazy``:
    safetensors tensors come unread, as :class:`~.safetensors_reader.FileTensor` (for
    :func:`load_into`, which reads them into the parameters)."""
    for filename in WEIGHT_FILES:
        path = resolve_file(name_or_path, filename, optional=True, **hub_kwargs)
        if path is None:
            continue
        if not filename.endswith(".index.json"):
            return _read_file(path, lazy)
        with open(path, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state: dict[str, Any] = {}
        for shard in shards:
            state.update(_read_file(resolve_file(name_or_path, shard, **hub_kwargs), lazy))
        return state
    raise CheckpointNotFoundError(
        f"{name_or_path}: no weights found (looked for {', '.join(WEIGHT_FILES)}); "
        "if it is a hub id, the hub may be unreachable and the weights not cached"
    )


def load_into(model: nn.Module, state: dict[str, Tensor], source: str, strict: bool = True,
              ignore_mismatched: bool = False, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """Copy ``state`` (our names) into ``model``, refusing any partial or mis-shaped load.

    ``ignore_mismatched``: tensors whose shape differs (e.g. a classifier for another class
    count) keep the model's fresh values instead. Returns transformers' loading info:
    missing_keys, unexpected_keys, mismatched_keys (name, checkpoint shape, model shape),
    error_msgs. ``optional``: name prefixes that may be missing even when strict (they keep
    their fresh values), e.g. the class head for a base model. Unread file tensors
    (``read_hf_state_dict(lazy=True)``) are read straight into the parameters.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    required = [k for k in missing if not k.startswith(optional)] if optional else missing
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted((k, tuple(state[k].shape), tuple(expected[k].shape))
                        for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    problems = []
    if mismatched and not ignore_mismatched:
        problems.append(f"{len(mismatched)} mis-shaped: " + "; ".join(
            f"{k}: checkpoint {a} vs model {b}" for k, a, b in mismatched[:20])
            + " (ignore_mismatched_sizes=True keeps the model's fresh values for these)")
    if strict and required:
        problems.append(f"{len(required)} missing: " + ", ".join(required[:20]))
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected: " + ", ".join(unexpected[:20]))
    if problems:
        raise CheckpointMismatchError(f"{source}: checkpoint does not fit the model: " + " | ".join(problems))
    skip = {k for k, _, _ in mismatched}
    usable = {k: v for k, v in state.items() if k in expected and k not in skip}
    lazy = {k: v for k, v in usable.items() if isinstance(v, LazyTensor)}
    if lazy and any(p.is_meta for p in expected.values()):  # nowhere to read into: materialise
        usable = {k: (v.load() if k in lazy else v) for k, v in usable.items()}
        lazy = {}
    with torch.no_grad():
        for k, v in lazy.items():  # state_dict()'s tensors share the parameters' storage
            v.read_into(expected[k])
    usable = {k: v for k, v in usable.items() if k not in lazy}
    if any(p.is_meta for p in expected.values()):
        model.load_state_dict(usable, strict=False, assign=True)
    else:
        model.load_state_dict(usable, strict=False)
    return {"missing_keys": set(missing), "unexpected_keys": set(unexpected), "mismatched_keys": mismatched,
            "error_msgs": []}


def hf_state_to_ours(state: dict[str, Tensor], source: str, strict: bool = True) -> dict[str, Tensor]:
    """Rename to our names; an unknown name is an error, or with ``strict=False`` kept as it
    is (then reported as unexpected)."""
    if not any(k.startswith("model.") for k in state):  # saved from transformers' Mask2FormerModel
        state = {(f"model.{k}" if k.startswith(("pixel_level_module.", "transformer_module.")) else k): v
                 for k, v in state.items()}
    ours, unknown = hf_to_ours(state)
    if unknown and not strict:
        return {**ours, **{k: state[k] for k in unknown}}
    if unknown:
        raise CheckpointMismatchError(
            f"{source}: {len(unknown)} tensors with names this loader does not know: " + ", ".join(unknown[:20])
        )
    return ours


def save_hf_weights(model: nn.Module, directory: str | os.PathLike, no_object_weight: float) -> None:
    """Write ``model.safetensors`` under the names published checkpoints use."""
    from safetensors.torch import save_file

    state = ours_to_hf({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    num_classes = state["class_predictor.bias"].shape[0]
    # transformers keeps the loss's class weights as a buffer; write it so it loads cleanly.
    empty_weight = torch.ones(num_classes)
    empty_weight[-1] = no_object_weight
    state["criterion.empty_weight"] = empty_weight
    with atomic_path(os.path.join(directory, "model.safetensors")) as tmp:
        save_file(state, tmp, metadata={"format": "pt"})
