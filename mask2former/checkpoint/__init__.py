"""Loading checkpoints in both real formats: Hugging Face folders / hub ids, and the
original detectron2 model-zoo ``.pkl`` files."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .hf import CheckpointMismatchError, hf_state_to_ours, load_into, read_hf_state_dict
from .hub import CheckpointNotFoundError, resolve_file

if TYPE_CHECKING:
    from ..config import Mask2FormerConfig
    from ..model import Mask2FormerForUniversalSegmentation

HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download")


def is_detectron2_checkpoint(path: str | os.PathLike) -> bool:
    return os.path.isfile(path) and os.fspath(path).endswith((".pkl", ".pth"))


def load_model(name_or_path: str | os.PathLike, strict: bool = True, **kwargs: Any
               ) -> "Mask2FormerForUniversalSegmentation":
    """Build the network a checkpoint describes and load its weights (eval mode)."""
    from ..model import Mask2FormerForUniversalSegmentation

    source = os.path.expanduser(os.fspath(name_or_path))
    if is_detectron2_checkpoint(source):
        from .detectron2 import read_detectron2_checkpoint

        config, state = read_detectron2_checkpoint(source, **kwargs)
        resolved = os.path.abspath(source)
    else:
        hub_kwargs = {k: v for k, v in kwargs.items() if k in HUB_KWARGS}
        config_path = resolve_file(source, "config.json", **hub_kwargs)
        config = read_config(config_path)
        state = hf_state_to_ours(read_hf_state_dict(source, **hub_kwargs), source)
        resolved = os.path.dirname(config_path)
        if "id2label" in kwargs:
            config.id2label = dict(kwargs["id2label"])
    model = Mask2FormerForUniversalSegmentation(config)
    load_into(model, state, source, strict=strict)
    model.eval()
    model.source = resolved  # where the weights were read: the folder, hub cache snapshot or file
    return model


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
