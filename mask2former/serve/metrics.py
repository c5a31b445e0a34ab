"""Prometheus text exposition (format 0.0.4), written out directly: a few counters and
histograms do not need a client library."""
from __future__ import annotations

import bisect
import threading
from typing import Callable, Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in pairs)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(pairs, escaped)) + "}"


class Histogram:
    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.total, self.n = 0.0, 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: Sequence[tuple[str, str]] = ()) -> list[str]:
        out, cumulative = [], 0
        for bound, count in zip(list(self.buckets) + ["+Inf"], self.counts):
            cumulative += count
            le = bound if isinstance(bound, str) else f"{bound:g}"
            out.append(f"{name}_bucket{_labels([*labels, ('le', le)])} {cumulative}")
        out.append(f"{name}_sum{_labels(labels)} {self.total:.6f}")
        out.append(f"{name}_count{_labels(labels)} {self.n}")
        return out


class Metrics:
    """Requests by path and status, their latency, forward batch sizes and times, queue depth."""

    def __init__(self, queue_depth: Callable[[], int]):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self.queue_depth = queue_depth

    def request(self, method: str, path: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, path, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            self.latency.setdefault(path, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batch_size.observe(size)
            self.batch_seconds.observe(seconds)

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP mask2former_requests_total HTTP requests answered, by path and status.",
                     "# TYPE mask2former_requests_total counter"]
            for (method, path, status), n in sorted(self.requests.items()):
                lines.append(f"mask2former_requests_total"
                             f"{_labels([('method', method), ('path', path), ('status', status)])} {n}")
            lines += ["# HELP mask2former_request_seconds Time from request to response, by path.",
                      "# TYPE mask2former_request_seconds histogram"]
            for path, h in sorted(self.latency.items()):
                lines += h.lines("mask2former_request_seconds", [("path", path)])
            lines += ["# HELP mask2former_batch_size Images per model forward.",
                      "# TYPE mask2former_batch_size histogram", *self.batch_size.lines("mask2former_batch_size"),
                      "# HELP mask2former_batch_seconds Time of one batched forward with post-processing.",
                      "# TYPE mask2former_batch_seconds histogram",
                      *self.batch_seconds.lines("mask2former_batch_seconds"),
                      "# HELP mask2former_queue_depth Requests waiting for the model.",
                      "# TYPE mask2former_queue_depth gauge", f"mask2former_queue_depth {self.queue_depth()}"]
        return "\n".join(lines) + "\n"
