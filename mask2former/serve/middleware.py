"""Around every request: the JSON-lines access log and the request metrics (pure ASGI, so the
status and timing are the ones the client sees, errors included)."""
from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from .metrics import Metrics

KNOWN_PATHS = ("/", "/healthz", "/readyz", "/metrics", "/v1/model", "/v1/segment", "/docs", "/openapi.json")


def path_label(path: str) -> str:
    """A bounded set of metric labels, whatever paths clients make up."""
    if path in KNOWN_PATHS:
        return path
    if path.startswith("/v1/segment/"):
        return "/v1/segment/{output}"
    if path.startswith("/static/"):
        return "/static"
    return "other"


def json_log_line(record: dict[str, Any], stream: Any = None) -> None:
    print(json.dumps(record, separators=(",", ":")), file=stream or sys.stderr, flush=True)


class AccessLog:
    def __init__(self, app: Any, metrics: Metrics, log: Optional[Callable[[dict[str, Any]], None]] = None):
        self.app, self.metrics, self.log = app, metrics, log

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        info = {"status": 500, "bytes_out": 0}
        request_id = uuid.uuid4().hex[:16]

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                info["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                info["bytes_out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - start
            self.metrics.request(scope["method"], path_label(scope["path"]), info["status"], seconds)
            if self.log is not None:
                client = scope.get("client") or ("", 0)
                self.log({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                          "request_id": request_id, "client": f"{client[0]}:{client[1]}",
                          "method": scope["method"], "path": scope["path"], "status": info["status"],
                          "ms": round(seconds * 1000, 2), "bytes_out": info["bytes_out"]})
