"""Training checkpoints: everything needed to continue exactly, written atomically."""
from __future__ import annotations

import os
import random
from typing import Any, Optional

import numpy as np
import torch

from ..io import atomic_path

LAST = "last_checkpoint.pth"


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                              "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_training_state(folder: str, iteration: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, scaler: Optional[torch.amp.GradScaler], extra: dict[str, Any]) -> str:
    """Write ``last_checkpoint.pth`` (replacing the previous one only once complete)."""
    state = {
        "iteration": iteration,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_states(),
        **extra,
    }
    path = os.path.join(folder, LAST)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_training_state(folder: str) -> Optional[dict[str, Any]]:
    path = os.path.join(folder, LAST)
    if not os.path.isfile(path):
        return None
    # Our own file: it holds RNG states (numpy arrays, tuples), so a full unpickle is needed.
    return torch.load(path, map_location="cpu", weights_only=False)
