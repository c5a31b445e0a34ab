"""How OpenMP's idle threads should wait: sleep at once (PASSIVE, what ``import mask2former``
sets) or spin a while first (libgomp's own default spins ~300,000 rounds), on a quiet machine
and beside a competing process (a second copy of the same job, as a second torchrun rank or
another service on the box would be).

    python benchmarks/wait_policy.py                       # Swin-T 512x1024, fp32 and bf16
    python benchmarks/wait_policy.py --precisions fp32 --repeats 5

Each (policy, precision) runs in a fresh process (the policy is read when OpenMP starts):
image file -> label map with ``Segmenter``, best and median of ``--repeats`` calls. Under
load the competitor runs the same job with the same policy in a loop. Ratios are against
PASSIVE measured in the same condition. Writes benchmarks/results/wait_policy.json / .md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import checkpoint, machine, machine_text, size_arg, table, write_results  # noqa: E402
from end_to_end import make_images  # noqa: E402

POLICIES: dict[str, dict[str, str]] = {
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 10k": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "10000"},
    "spin 100k": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "100000"},
    "libgomp default (spin 300k)": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "300000"},
}

CHILD = r"""
import json, sys, time
args = json.loads(sys.argv[1])
import torch
from mask2former import Segmenter
from mask2former.processor import Mask2FormerImageProcessor
seg = Segmenter(args["model"], task="semantic", precision=args["precision"], resize="config",
                processor=Mask2FormerImageProcessor(do_resize=False))
seg(args["image"])  # warm-up
times = []
while True:
    t = time.perf_counter(); seg(args["image"]); times.append(time.perf_counter() - t)
    if not args["forever"] and len(times) >= args["repeats"]:
        break
print(json.dumps(times))
"""


def run(policy: dict[str, str], precision: str, model: str, image: str, repeats: int, forever: bool = False
        ) -> Any:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(policy)
    env["PYTHONWARNINGS"] = "ignore"
    args = json.dumps({"model": model, "image": image, "precision": precision, "repeats": repeats,
                       "forever": forever})
    cmd = [sys.executable, "-c", CHILD, args]
    if forever:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="swin-t", choices=["swin-t", "swin-l"])
    p.add_argument("--size", type=size_arg, default="512x1024")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "wait_policy"))
    a = p.parse_args()
    h, w = (int(v) for v in a.size.split("x"))
    model = checkpoint(a.arch)
    folder = os.path.join(tempfile.gettempdir(), "m2f-bench-images")
    os.makedirs(folder, exist_ok=True)
    image = make_images((h, w), 1, folder)[0]
    rows = []
    for condition in ("quiet", "loaded"):
        for precision in a.precisions:
            for name in a.policies:
                competitor = None
                if condition == "loaded":
                    competitor = run(POLICIES[name], precision, model, image, 0, forever=True)
                    time.sleep(20)  # the competitor has loaded and is segmenting
                try:
                    times = run(POLICIES[name], precision, model, image, a.repeats)
                finally:
                    if competitor is not None:
                        competitor.kill()
                        competitor.wait()
                rows.append({"condition": condition, "precision": precision, "policy": name,
                             "best_s": min(times), "median_s": statistics.median(times), "times": times})
                print(json.dumps(rows[-1]), flush=True)
    info = machine()
    for r in rows:
        base = next(b for b in rows if b["condition"] == r["condition"] and b["precision"] == r["precision"]
                    and b["policy"] == "PASSIVE")
        r["median_vs_passive"] = r["median_s"] / base["median_s"]
        r["machine"] = info
    lines = [f"{a.arch} {a.size}, image file -> label map, Segmenter, 1 image; {machine_text(info)}. "
             "Ratio = median time / PASSIVE's median in the same condition (< 1: faster than PASSIVE).", ""]
    lines += table(["condition", "precision", "policy", "best s", "median s", "median vs PASSIVE"],
                   [[r["condition"], r["precision"], r["policy"], f"{r['best_s']:.2f}", f"{r['median_s']:.2f}",
                     f"{r['median_vs_passive']:.2f}"] for r in rows])
    write_results(a.out, rows, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
