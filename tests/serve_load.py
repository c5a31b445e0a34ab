"""Load client for ``mask2former serve`` (run as its own process by tests/test_serve.py):
REQUESTS requests at CONCURRENCY over loopback, each image's labels.png checked against
IMAGE's ``<stem>_expected.png``; prints throughput and latency percentiles, exits 1 on any
wrong or failed answer."""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("images", nargs="+")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    bodies = [open(path, "rb").read() for path in args.images]
    expected = [open(os.path.splitext(path)[0] + "_expected.png", "rb").read() for path in args.images]
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    client = httpx.Client(limits=limits, timeout=300)

    def one(i: int) -> tuple[str, float]:
        k = i % len(bodies)
        start = time.perf_counter()
        try:
            r = client.post(args.url + "/v1/segment/labels.png", content=bodies[k],
                            headers={"content-type": "image/png"})
        except httpx.HTTPError as e:
            return f"failed: {e}", time.perf_counter() - start
        seconds = time.perf_counter() - start
        if r.status_code != 200:
            return f"failed: {r.status_code} {r.text[:200]}", seconds
        return ("ok" if r.content == expected[k] else "wrong"), seconds

    start = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        outcomes = list(pool.map(one, range(args.requests)))
    wall = time.perf_counter() - start
    latencies = np.array([s for _, s in outcomes]) * 1000
    ok = sum(o == "ok" for o, _ in outcomes)
    wrong = sum(o == "wrong" for o, _ in outcomes)
    failed = [o for o, _ in outcomes if o.startswith("failed")]
    print(f"{len(outcomes)} requests at concurrency {args.concurrency}: {ok} ok, {wrong} wrong, {len(failed)} failed; "
          f"{len(outcomes) / wall:.2f} req/s, p50 {np.percentile(latencies, 50):.0f} ms, "
          f"p99 {np.percentile(latencies, 99):.0f} ms")
    for o in failed[:5]:
        print(o)
    return 0 if ok == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
