"""The training loop: iteration-based like detectron2, resumable exactly, DDP-ready.

Data order is a pure function of (seed, iteration): each epoch is a seeded permutation and each
item's augmentation draws from ``default_rng([seed, epoch, index])``. So a resumed run sees the
same batches as an uninterrupted one, whatever the number of workers, and only the iteration
(plus model, optimiser, scheduler, scaler and RNG states) is stored in a checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..criterion import build_criterion
from ..data import (AugmentedDataset, DatasetError, build_dataset, collate, lsj_augmentation, scale_choices,
                    semantic_augmentation)
from ..devices import resolve_device
from ..io import atomic_write_text
from .. import distributed as dist_utils
from .checkpointing import load_training_state, save_training_state, set_rng_states
from .config import TrainConfig
from .data_check import check_dataset
from .model_init import build_train_model
from .optim import build_optimizer, build_scheduler, clip_full_model

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


class NonFiniteLossError(RuntimeError):
    pass


class _EpochItems(torch.utils.data.Dataset):
    """Items addressed as (epoch, index) so workers need no shared epoch state."""

    def __init__(self, dataset: AugmentedDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        self.dataset.set_epoch(key[0])
        try:
            return {**self.dataset[key[1]], "key": key}
        except DatasetError as e:  # handed to the main process, which reports it as one line
            return {"error": str(e), "key": key}


def collate_with_keys(batch: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [b["error"] for b in batch if "error" in b]
    if errors:
        return {"error": errors[0]}
    out = collate(batch)
    out["keys"] = [b["key"] for b in batch]
    return out


def point_generators(seed: int, iteration: int, keys: list[tuple[int, int]], device: torch.device
                     ) -> list[torch.Generator]:
    """One RNG per image for the loss's random points, seeded by (seed, iteration, sample):
    the same points whatever the number of processes or accumulation steps."""
    gens = []
    for epoch, index in keys:
        state = np.random.SeedSequence([seed, iteration, epoch, index]).generate_state(1, dtype=np.uint64)[0]
        gens.append(torch.Generator(device=device).manual_seed(int(state) & (2**63 - 1)))
    return gens


def batch_plan(n: int, batch_size: int, seed: int, start_iter: int, iterations: int, rank: int, world: int,
               accumulate: int) -> Iterator[list[tuple[int, int]]]:
    """Micro-batches of (epoch, index) for this rank, from ``start_iter`` on."""
    steps_per_epoch = max(n // batch_size, 1)
    per_rank = batch_size // world
    micro = per_rank // accumulate
    perm_epoch, perm = -1, None
    for it in range(start_iter, iterations):
        epoch, step = divmod(it, steps_per_epoch)
        if epoch != perm_epoch:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
            perm_epoch = epoch
        chosen = [perm[(step * batch_size + j) % n] for j in range(batch_size)]
        mine = chosen[rank * per_rank:(rank + 1) * per_rank]
        for a in range(accumulate):
            yield [(epoch, i) for i in mine[a * micro:(a + 1) * micro]]


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C and SIGTERM (sent to the whole process group by a
    terminal, ``timeout``, docker, Slurm): the main process decides when to stop, saves a
    checkpoint, then shuts the workers down itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> ImageNet-normalised float, as the original's pixel mean/std."""
    return (images.float() - MEAN.to(images.device)) / STD.to(images.device)


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False):
        cfg.validate()
        self.cfg = cfg
        self.rank, self.world, device = dist_utils.init_from_env()
        self.device = resolve_device(cfg.device) if cfg.device else device
        if cfg.batch_size % (self.world * cfg.accumulate):
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by processes x accumulate "
                             f"({self.world} x {cfg.accumulate})")
        torch.manual_seed(cfg.seed)
        train = build_dataset(cfg.dataset, cfg.data_root, cfg.train_split)
        check_dataset(train, everything=cfg.check_data, device=self.device)
        self.classes = train.classes
        id2label = {i: c.name for i, c in enumerate(train.classes)}
        if cfg.dataset.startswith("coco"):
            aug = lsj_augmentation(cfg.crop_size[0])
        else:
            aug = semantic_augmentation(scale_choices(cfg.base_size), cfg.max_size, cfg.crop_size,
                                        color_aug=cfg.color_aug)
        self.train_set = AugmentedDataset(train, aug, task=cfg.task, seed=cfg.seed)
        self.model = build_train_model(cfg.architecture, cfg.init, cfg.backbone_weights, id2label,
                                       cfg.model_overrides).to(self.device)
        self.model.criterion = build_criterion(self.model.config).to(self.device)
        if cfg.memory_check:
            self._check_memory()
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay, cfg.backbone_multiplier)
        self.scheduler = build_scheduler(self.optimizer, cfg.iterations, cfg.poly_power, cfg.warmup_iters)
        use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_amp else None
        self.net = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.start_iter = 0
        if resume:
            self._resume()
        # Point sampling and drop path draw from the global RNG: give each rank its own stream.
        if self.start_iter == 0:
            torch.manual_seed(cfg.seed * 1000 + self.rank + 1)
        self.stop_requested = False
        self.log_file = os.path.join(cfg.output_dir, "metrics.jsonl")
        self.tb = None

    def _resume(self) -> None:
        state = load_training_state(self.cfg.output_dir)
        if state is None:
            if dist_utils.is_main():
                print(f"no checkpoint in {self.cfg.output_dir}; starting from scratch", file=sys.stderr)
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_states(state["rng"] if self.world == 1 else state["rng_per_rank"][self.rank])
        self.start_iter = state["iteration"]
        if dist_utils.is_main():
            print(f"resumed from iteration {self.start_iter}", file=sys.stderr)

    def _check_memory(self) -> None:
        from .memory import check_fits, estimate, local_process_count

        cfg = self.cfg
        micro = cfg.batch_size // (self.world * cfg.accumulate)
        est = estimate(self.model, cfg.architecture, cfg.crop_size, micro, cfg.num_workers,
                       cfg.amp and self.device.type == "cuda", self.device,
                       local_process_count() if self.device.type == "cpu" else 1)
        check_fits(est, cfg.architecture if not cfg.init else "the --init model", cfg.crop_size, cfg.batch_size,
                   self.world, cfg.accumulate)
        if dist_utils.is_main() and est.available:
            print(f"memory: about {est.total / 2**30:.1f} GB needed, {est.available / 2**30:.1f} GB {est.where}",
                  file=sys.stderr)

    # -- bookkeeping ---------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        """SIGTERM / SIGINT: finish the current step, save, exit. A third one stops at once."""
        self.signals += 1
        self.stop_requested = signal.Signals(signum).name
        if self.signals >= 3:
            print(f"{self.stop_requested} again: stopping now, without a checkpoint", file=sys.stderr)
            os._exit(128 + signum)
        if self.signals == 1 and dist_utils.is_main():
            print(f"\n{self.stop_requested}: stopping after this step, saving a checkpoint", file=sys.stderr)

    def _stop_now(self) -> bool:
        """Whether any process was asked to stop: all of them stop at the same iteration."""
        if self.world == 1:
            return bool(self.stop_requested)
        flag = torch.tensor(1.0 if self.stop_requested else 0.0, device=self.device)
        return dist_utils.all_reduce_sum(flag).item() > 0

    def _log(self, record: dict[str, Any]) -> None:
        if not dist_utils.is_main():
            return
        with open(self.log_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "iteration" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["iteration"])

    def save_checkpoint(self, iteration: int) -> None:
        states = None
        if self.world > 1:
            from .checkpointing import rng_states

            states = [None] * self.world
            torch.distributed.all_gather_object(states, rng_states())
        if dist_utils.is_main():
            extra = {"config": self.cfg.to_dict(), "rng_per_rank": states}
            save_training_state(self.cfg.output_dir, iteration, self.model, self.optimizer, self.scheduler,
                                self.scaler, extra)
        dist_utils.barrier()

    def _loader(self) -> DataLoader:
        plan = list(batch_plan(len(self.train_set), self.cfg.batch_size, self.cfg.seed, self.start_iter,
                               self.cfg.iterations, self.rank, self.world, self.cfg.accumulate))
        # Its own generator: a DataLoader otherwise draws its worker seed from the global RNG,
        # which would shift the loss's random points after a resume.
        return DataLoader(_EpochItems(self.train_set), batch_sampler=plan, collate_fn=collate_with_keys,
                          num_workers=self.cfg.num_workers, generator=torch.Generator().manual_seed(self.cfg.seed),
                          worker_init_fn=ignore_stop_signals)

    # -- the loop --------------------------------------------------------------------------
    def step(self, batches: Iterator[dict[str, Any]], iteration: int) -> dict[str, float]:
        """One optimiser step over ``accumulate`` micro-batches; returns the logged losses."""
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for a in range(self.cfg.accumulate):
            batch = next(batches)
            if "error" in batch:
                raise DatasetError(batch["error"])
            x = normalize(batch["images"].to(self.device))
            masks = [m.to(self.device).float() for m in batch["masks"]]
            labels = [lab.to(self.device) for lab in batch["labels"]]
            last = a == self.cfg.accumulate - 1
            sync = self.net.no_sync() if (self.world > 1 and not last) else _null()
            with sync, torch.autocast(self.device.type, dtype=torch.float16, enabled=self.scaler is not None):
                gens = point_generators(self.cfg.seed, iteration, batch["keys"], self.device)
                out = self.net(pixel_values=x, pixel_mask=batch["pixel_mask"].to(self.device),
                               mask_labels=masks, class_labels=labels, point_generators=gens)
                loss = out.loss / self.cfg.accumulate
                bad = torch.tensor(0.0 if torch.isfinite(loss) else 1.0, device=self.device)
                if dist_utils.all_reduce_sum(bad).item() > 0:  # every rank decides together
                    for _ in range(self.cfg.accumulate - 1 - a):
                        next(batches)  # keep the data stream aligned with the iteration count
                    raise NonFiniteLossError(f"loss is {loss.item()}")
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            for k in ("loss", "loss_ce", "loss_mask", "loss_dice"):
                totals[k] = totals.get(k, 0.0) + out.loss_dict[k].item() / self.cfg.accumulate
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.clip_grad > 0:
            clip_full_model(self.model.parameters(), self.cfg.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        return totals

    def train(self) -> Optional[str]:
        cfg = self.cfg
        if dist_utils.is_main():
            os.makedirs(cfg.output_dir, exist_ok=True)
            atomic_write_text(os.path.join(cfg.output_dir, "train_config.json"), json.dumps(cfg.to_dict(), indent=2))
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.join(cfg.output_dir, "tensorboard"))
            except Exception:  # tensorboard is optional
                self.tb = None
        batches = iter(self._loader())  # workers start here, and ignore stop signals
        self.signals = 0
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        progress = _progress(self.start_iter, cfg.iterations, dist_utils.is_main())
        it = self.start_iter
        start = time.time()
        try:
            while it < cfg.iterations:
                try:
                    losses = self.step(batches, it)
                except NonFiniteLossError as e:
                    if cfg.on_nan == "stop":
                        raise NonFiniteLossError(f"iteration {it + 1}: {e}; stopping (weights not updated)") from None
                    print(f"iteration {it + 1}: {e}; skipping this step", file=sys.stderr)
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scheduler.step()
                    it += 1
                    continue
                it += 1
                lr = max(g["lr"] for g in self.optimizer.param_groups)  # the head's lr, not the backbone's
                if it % cfg.log_period == 0 or it == cfg.iterations:
                    self._log({"iteration": it, "lr": lr, **losses, "seconds": time.time() - start})
                progress.update(it, losses.get("loss", float("nan")), lr)
                stop = self._stop_now() and it < cfg.iterations  # at the end: finish normally
                if it % cfg.checkpoint_period == 0 or stop:
                    self.save_checkpoint(it)
                if stop:
                    progress.close()
                    if dist_utils.is_main():
                        print(f"{self.stop_requested or 'stop requested'}: checkpoint saved at iteration {it} in "
                              f"{cfg.output_dir}; continue with --resume", file=sys.stderr)
                    return None
                if cfg.eval_period and it % cfg.eval_period == 0 and it < cfg.iterations:
                    self.evaluate(it)
        finally:
            progress.close()  # before any error line: not printed into a live bar
            for s, handler in previous.items():
                signal.signal(s, handler)
            # Shut the workers down now, even when an exception's traceback keeps the iterator
            # alive: they ignore SIGTERM, so multiprocessing's exit-time terminate() would not.
            getattr(batches, "_shutdown_workers", lambda: None)()
        progress.close()
        self.save_checkpoint(it)
        metrics = self.evaluate(it) if cfg.eval_period else {}
        return self.export(metrics)

    def evaluate(self, iteration: int) -> dict[str, Any]:
        from .validate import validate

        metrics = validate(self.model, self.cfg, self.device)
        if metrics:
            self._log({"iteration": iteration, **{k: v for k, v in metrics.items() if isinstance(v, float)}})
            if dist_utils.is_main():
                print(f"iteration {iteration}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()
                                                            if isinstance(v, float)), file=sys.stderr)
        return metrics

    def export(self, metrics: dict[str, Any]) -> Optional[str]:
        """Save the final model where ``from_pretrained`` and ``mask2former segment`` read it."""
        if not dist_utils.is_main():
            return None
        from .export import export_model

        return export_model(self.model, self.classes, self.cfg, metrics)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


class _progress:
    """tqdm bar with loss, lr and ETA on rank 0 (plain lines when tqdm is missing)."""

    def __init__(self, start: int, total: int, enabled: bool):
        self.bar = None
        self.enabled = enabled
        self.t0, self.start, self.total = time.time(), start, total
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=start, unit="it", dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, it: int, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(it - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        elif it % 20 == 0:
            rate = (it - self.start) / max(time.time() - self.t0, 1e-9)
            eta = (self.total - it) / max(rate, 1e-9)
            print(f"[{it}/{self.total}] loss {loss:.3f} lr {lr:.2e} eta {math.ceil(eta)}s", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
