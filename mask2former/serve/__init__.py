"""``mask2former serve``: one model behind an HTTP API (Hugging Face Inference API compatible
and native), with dynamic batching, limits, metrics and a web page. Needs the ``serve`` extra
(FastAPI, uvicorn, python-multipart)."""
from .app import build_app
from .config import ServeConfig

__all__ = ["build_app", "ServeConfig"]
