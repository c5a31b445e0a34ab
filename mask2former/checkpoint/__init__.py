"""Loading checkpoints in both real formats: Hugging Face folders / hub ids, and the
original detectron2 model-zoo ``.pkl`` files."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

from .hf import CheckpointMismatchError, hf_state_to_ours, load_into, read_hf_state_dict
from .hub import HUB_KWARGS, CheckpointNotFoundError, resolve_file

if TYPE_CHECKING:
    from ..config import Mask2FormerConfig
    from ..model import Mask2FormerForUniversalSegmentation



def is_detectron2_checkpoint(path: str | os.PathLike) -> bool:
    return os.path.isfile(path) and os.fspath(path).endswith((".pkl", ".pth"))


def _labels_override(kwargs: dict[str, Any]) -> Optional[dict[int, str]]:
    id2label, label2id, num_labels = (kwargs.pop(k, None) for k in ("id2label", "label2id", "num_labels"))
    if id2label is not None:
        return {int(k): str(v) for k, v in dict(id2label).items()} if not isinstance(id2label, (list, tuple)) \
            else {i: str(v) for i, v in enumerate(id2label)}
    if label2id is not None:
        return {int(i): str(label) for label, i in dict(label2id).items()}
    if num_labels is not None:
        return {i: f"LABEL_{i}" for i in range(int(num_labels))}
    return None


def load_model(name_or_path: Optional[str | os.PathLike], strict: Optional[bool] = True,
               model_class: Optional[type] = None, **kwargs: Any) -> Any:
    """Build the network a checkpoint describes and load its weights (eval mode).

    ``model_class``: the class to build (default Mask2FormerForUniversalSegmentation); the
    rest are :meth:`Mask2FormerPreTrainedModel.from_pretrained`'s keyword arguments.
    ``strict=None``: strict unless ``output_loading_info`` asks to see what did not load.
    """
    import torch

    from ..config import Mask2FormerConfig
    from ..model import Mask2FormerForUniversalSegmentation

    if torch.empty(0).device.type == "meta":
        raise RuntimeError("You are using `from_pretrained` with a meta device context manager: build the model "
                           "there instead (with torch.device('meta'): Mask2FormerForUniversalSegmentation(config))")
    cls = model_class or Mask2FormerForUniversalSegmentation
    config = kwargs.pop("config", None)
    given_state = kwargs.pop("state_dict", None)
    ignore_mismatched = bool(kwargs.pop("ignore_mismatched_sizes", False))
    want_info = bool(kwargs.pop("output_loading_info", False))
    if strict is None:
        strict = not want_info
    dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
    for key in ("use_safetensors", "trust_remote_code", "low_cpu_mem_usage", "device_map", "attn_implementation"):
        kwargs.pop(key, None)  # transformers' loading switches; nothing to choose here
    source = os.path.expanduser(os.fspath(name_or_path)) if name_or_path is not None else "state_dict"
    if name_or_path is None:  # transformers' from_pretrained(None, config=..., state_dict=...)
        if config is None or given_state is None:
            raise ValueError("from_pretrained(None, ...) needs both config= and state_dict=")
        file_config, state, resolved = config, dict(given_state), None
    elif is_detectron2_checkpoint(source):
        from .detectron2 import read_detectron2_checkpoint

        file_config, state = read_detectron2_checkpoint(source, id2label=kwargs.pop("id2label", None))
        resolved = os.path.abspath(source)
    else:
        hub_kwargs = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
        config_path = resolve_file(source, "config.json", **hub_kwargs)
        file_config = read_config(config_path)
        state = dict(given_state) if given_state is not None else \
            hf_state_to_ours(read_hf_state_dict(source, lazy=True, **hub_kwargs), source, strict=strict)
        resolved = os.path.dirname(config_path)
    if config is None:
        config = file_config
    elif not isinstance(config, Mask2FormerConfig):  # a transformers config
        config = Mask2FormerConfig.from_dict(config.to_dict())
    labels = _labels_override(kwargs)
    if labels is not None:
        config.id2label = labels
    config.update(kwargs)  # remaining keywords are config fields, as in transformers
    model = cls(config)
    info = load_into(model, state, source, strict=strict, ignore_mismatched=ignore_mismatched,
                     optional=getattr(cls, "_optional_weights", ()))
    if dtype is not None and dtype != "auto":  # "auto": the checkpoint's float32, as stored
        model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    model.eval()
    model.source = resolved  # where the weights were read: the folder, hub cache snapshot or file
    return (model, info) if want_info else model


def read_config(path: str) -> "Mask2FormerConfig":
    """``config.json``, or a ValueError with one line naming the file and what is wrong."""
    from ..config import Mask2FormerConfig

    try:
        return Mask2FormerConfig.from_json_file(path)
    except OSError:
        raise
    except Exception as e:  # bad JSON, wrong field types, unknown backbone: all are the file's fault
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not a valid Mask2Former config.json ({type(e).__name__}: {detail})") from None


__all__ = ["load_model", "CheckpointMismatchError", "CheckpointNotFoundError", "read_hf_state_dict"]
