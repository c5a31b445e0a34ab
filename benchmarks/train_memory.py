"""Peak memory of one training step, per architecture and crop size, for the memory model in
``mask2former/train/memory.py`` (which refuses configurations that will not fit).

Each measurement runs in a fresh process: the peak resident size during the first optimiser
step (fp32, CPU) above the resident size just before it, at micro-batch 1 and 2 (a later step
would start with the first one's freed memory cached by the allocator). The difference is the
cost of one more image; it is printed per megapixel of crop next to what the model predicts.

    python benchmarks/train_memory.py --arch tiny swin-t --crops 128 256
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, torch
from mask2former.train import TrainConfig, Trainer
root, arch, crop, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
cfg = TrainConfig(dataset="folder", data_root=root, architecture=arch, iterations=2, batch_size=batch,
                  crop_size=(crop, crop), base_size=crop, max_size=4 * crop, num_workers=0, eval_period=0,
                  output_dir=root + "/out", memory_check=False, color_aug=False)
t = Trainer(cfg)
batches = iter(t._loader())
before = kb("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current size
t.step(batches, 0)  # the first step: freed memory is not yet cached by the allocator
print(json.dumps({"peak_mb": (kb("VmHWM") - before) / 1024, "params": sum(p.numel() for p in t.model.parameters())}))
"""


def measure(root: str, arch: str, crop: int, batch: int) -> dict:
    # A fixed mmap threshold: glibc then returns every large freed block to the system at once,
    # so the resident size follows the live tensors instead of what the allocator keeps cached.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
           "MALLOC_MMAP_THRESHOLD_": "131072"}
    res = subprocess.run([sys.executable, "-c", CHILD, root, arch, str(crop), str(batch)], capture_output=True,
                         text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", nargs="+", default=["tiny", "swin-t"])
    p.add_argument("--crops", nargs="+", type=int, default=[128, 256])
    a = p.parse_args()
    from mask2former.data.synthetic import generate
    from mask2former.train.memory import activation_bytes

    with tempfile.TemporaryDirectory() as root:
        generate(root, num_train=4, num_val=0, size=(max(a.crops), max(a.crops)), seed=0)
        for arch in a.arch:
            for crop in a.crops:
                one, two = measure(root, arch, crop, 1), measure(root, arch, crop, 2)
                per_image = two["peak_mb"] - one["peak_mb"]
                mpx = crop * crop / 1e6
                model = activation_bytes(arch, (crop, crop), 1) / 2**20
                print(f"{arch:7s} crop {crop}x{crop}: step peak {one['peak_mb']:.0f} MB (batch 1), "
                      f"{two['peak_mb']:.0f} MB (batch 2): {per_image:.0f} MB per image = "
                      f"{per_image / mpx:.0f} MB/Mpx; model {model:.0f} MB per image")


if __name__ == "__main__":
    main()
