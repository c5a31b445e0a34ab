"""What the server is allowed to do: batching, queue, limits, auth."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class ServeConfig:
    max_batch_size: int = 8  # images per forward; 1 turns dynamic batching off
    max_wait_ms: float = 10.0  # how long the first request of a batch waits for company
    queue_size: int = 64  # requests waiting for the model; one more gets 503
    timeout_s: float = 60.0  # per request, from arrival to answer (504 past it)
    max_bytes: int = 20 * 2**20  # request body (413 past it)
    max_pixels: int = 40_000_000  # decoded image width x height (413 past it)
    api_key: Optional[str] = None  # when set, API calls need "Authorization: Bearer KEY"
    overlay_alpha: float = 0.5  # default opacity of overlay.png, as `segment` writes it
    access_log: bool = True  # one JSON line per request on stderr

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "queue_size", "max_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("max_wait_ms", "timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)}")
