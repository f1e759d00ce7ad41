"""The fit loop: optimiser steps on mini-batches of chips, the unmixing and classification
losses of docs/method.md, validation every ``val_every`` steps keeping the best state."""

from __future__ import annotations

import copy
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hsimap.errors import HsimapError
from hsimap.inference import Scaling as InputScaling
from hsimap.inference import apply_scaled
from hsimap.metrics import Metrics, classification_metrics
from hsimap.model.losses import make_optimizer, sad_loss, sparsity_loss
from hsimap.model.network import UnmixingGuidedMamba
from hsimap.model.store import (
    TrainedModel,
)
from hsimap.model.vca import vca_best
from hsimap.runtime import release_memory
from hsimap.workflows.chips import ChipReader
from hsimap.workflows.train_options import TrainOptions
from hsimap.workflows.train_setup import Setup


def sigmoid_rampup(step: int, length: int) -> float:
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(step, 0), length) / length
    return math.exp(-5.0 * phase * phase)


class AbundanceAverage:
    """Each chip's moving average of its past abundances (the reference's temporal ensemble,
    which picks tokens in training), for as many chips as ``max_bytes`` holds; a chip pushed
    out starts its average again."""

    def __init__(self, alpha: float, max_bytes: int):
        self.alpha, self.max_bytes = alpha, max_bytes
        self._avg: OrderedDict[int, tuple[torch.Tensor, int]] = OrderedDict()
        self._held = 0

    def teacher(self, i: int) -> torch.Tensor | None:
        got = self._avg.get(i)
        if got is None:
            return None
        self._avg.move_to_end(i)
        ema, count = got
        return ema / (1.0 - self.alpha ** count)

    def update(self, i: int, a: torch.Tensor) -> None:
        a = a.detach().cpu()
        got = self._avg.pop(i, None)
        if got is None:
            ema, count = (1 - self.alpha) * a, 1
            self._held += ema.numel() * ema.element_size()
        else:
            ema, count = self.alpha * got[0] + (1 - self.alpha) * a, got[1] + 1
        self._avg[i] = (ema, count)
        while self._held > self.max_bytes and len(self._avg) > 1:
            _, (old, _) = self._avg.popitem(last=False)
            self._held -= old.numel() * old.element_size()


def init_endmembers(net: UnmixingGuidedMamba, pixels: np.ndarray, seed: int) -> None:
    """VCA on valid pixels drawn over the scenes (scaled) starts the endmember bank."""
    p = net.cfg.endmembers
    if len(pixels) < p:
        raise HsimapError(f"only {len(pixels)} valid pixels, fewer than {p} endmembers")
    net.unmixing.init_endmembers(torch.from_numpy(vca_best(pixels, p, seed=seed)))


@dataclass
class Fit:
    """One training run's moving parts: the step loop, validation and the best state."""

    model: TrainedModel
    setup: Setup
    reader: ChipReader
    val_reader: ChipReader
    opts: TrainOptions
    history: list[dict] = field(default_factory=list)
    best_key: tuple[float, float] = (-1.0, -math.inf)
    best_state: dict | None = None
    best_step: int = 0
    best_val: Metrics | None = None
    best_oa_step: int = 0          # the last step that raised the best validation OA
    stopped_early: int | None = None  # the step training stopped at, before ``steps``

    def __post_init__(self) -> None:
        o = self.opts
        self.net = self.model.network
        self.device = torch.device(o.device)
        self.optim, self.sched = make_optimizer(self.net, lr=o.lr, endmember_lr=o.endmember_lr,
                                                steps=o.steps, decay=o.decay,
                                                weight_decay=o.weight_decay)
        self.gen = torch.Generator().manual_seed(o.seed)
        self.rampup = max(1, o.steps // 10)
        chip = self.reader.chips[0].tile
        p = self.net.cfg.endmembers
        per_chip = p * chip.height * chip.width * 4
        # The averages of as many chips as 64 steps visit, at least, within the cache budget.
        self.ema = AbundanceAverage(o.ema_alpha, max(64 * o.batch * per_chip,
                                                     o.cache_mb * 2 ** 19))
        self._queue: list[int] = []

    def _next_batch(self) -> list[int]:
        """The next ``batch`` chips of a stream of seeded permutations (all of them, when
        there are fewer): every chip is visited once before any is visited again."""
        n = len(self.reader)
        if n <= self.opts.batch:
            return list(range(n))
        while len(self._queue) < self.opts.batch:
            fresh = torch.randperm(n, generator=self.gen).tolist()
            self._queue.extend(i for i in fresh if i not in self._queue[:self.opts.batch])
        out, self._queue = self._queue[:self.opts.batch], self._queue[self.opts.batch:]
        return out

    def step(self, step: int) -> dict[str, float]:
        """One optimiser step on a mini-batch of chips; the batch's losses."""
        o, dev, net = self.opts, self.device, self.net
        net.train()
        ids = self._next_batch()
        beta = o.ema_weight * sigmoid_rampup(step - 1, self.rampup)
        # Each chip read once a step: with a cache smaller than a batch, asking the reader
        # again would read it from the scene again.
        data = {i: self.reader[i] for i in ids}
        groups: dict[tuple[int, int], list[int]] = {}
        for i in ids:
            groups.setdefault(tuple(data[i].valid.shape), []).append(i)
        labelled = sum(int(data[i].train.sum()) for i in ids)
        sums = {"loss": 0.0, "ce": 0.0, "sad": 0.0, "sparsity": 0.0}
        self.optim.zero_grad(set_to_none=True)
        for members in groups.values():
            chips = [data[i] for i in members]
            x = torch.stack([c.x for c in chips]).to(dev, torch.float32)
            if o.augment:
                x = self._augment(x)
            valid = torch.stack([c.valid for c in chips]).to(dev)
            need = torch.stack([c.train for c in chips]).to(dev)
            target = torch.stack([c.target for c in chips]).to(dev)
            teachers = [self.ema.teacher(i) for i in members]
            teacher = weight = None
            if any(t is not None for t in teachers):
                zero = torch.zeros_like(next(t for t in teachers if t is not None))
                teacher = torch.stack([zero if t is None else t for t in teachers]).to(dev)
                weight = torch.tensor([0.0 if t is None else beta for t in teachers])
            origins = [(self.reader.chips[i].tile.row, self.reader.chips[i].tile.col)
                       for i in members]
            out = net(x, valid, origins, need=need, teacher=teacher,
                      teacher_weight=0.0 if weight is None else weight.to(dev),
                      generator=self.gen)
            share = len(members) / len(ids)
            logits = out.logits.permute(0, 2, 3, 1)[need]                  # (labelled, C)
            ce = F.cross_entropy(logits, target[need], reduction="sum",
                                 label_smoothing=o.label_smoothing) / max(1, labelled)
            sad = sad_loss(out.reconstruction, x, valid)
            sparse = sparsity_loss(out.abundances, valid)
            loss = ce
            if o.unmixing:
                loss = loss + share * (o.recon_weight * sad + o.sparsity_weight * sparse)
            loss.backward()
            for i, a in zip(members, out.abundances, strict=True):
                self.ema.update(i, a)
            for name, val in (("loss", loss), ("ce", ce)):
                sums[name] += float(val.detach())
            sums["sad"] += share * float(sad.detach())
            sums["sparsity"] += share * float(sparse.detach())
        self.optim.step()
        self.sched.step()
        return sums

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Illumination and sensor noise a 30 m pixel's label does not depend on: a brightness
        factor per pixel and Gaussian noise, drawn from the run's generator."""
        a = self.opts.augment
        b, _, h, w = x.shape
        scale = 1 + a * (2 * torch.rand((b, 1, h, w), generator=self.gen) - 1)
        noise = torch.randn(x.shape, generator=self.gen) * (a / 10)
        return x * scale.to(x.device) + noise.to(x.device)

    @torch.no_grad()
    def score_validation(self) -> Metrics:
        """The validation sample's metrics, its windows run as prediction runs them (read once,
        then kept: the sample is fixed, and a flight line's tiles are slow to decompress)."""
        reader, net, dev = self.val_reader, self.net, self.device
        ids = torch.as_tensor(self.model.class_table.ids)
        truth, pred = [], []
        for start in range(0, len(reader), self.opts.batch):
            members = list(range(start, min(start + self.opts.batch, len(reader))))
            groups: dict[tuple[int, int], list[int]] = {}
            for i in members:
                groups.setdefault(tuple(reader[i].valid.shape), []).append(i)
            for group in groups.values():
                chips = [reader[i] for i in group]
                origins = [(reader.chips[i].tile.row, reader.chips[i].tile.col) for i in group]
                # The cached chips are scaled already; the network meets them where it meets
                # every window (inference.apply_scaled).
                best = apply_scaled(net, InputScaling.of(self.model),
                                    torch.stack([c.x for c in chips]),
                                    torch.stack([c.valid for c in chips]), origins,
                                    dev).logits.argmax(1).cpu()
                for c, b in zip(chips, best, strict=True):
                    truth.append(ids[c.target[c.train]])
                    pred.append(ids[b[c.train]])
        return classification_metrics(torch.cat(truth).numpy(), torch.cat(pred).numpy(),
                                      self.model.class_table.ids)

    def validate(self, step: int) -> None:
        """Score the validation sample; keep the state with the best OA (ties: lower loss)."""
        self.net.eval()
        m = self.score_validation()
        self.net.train()
        # Steps allocate tensors of changing sizes (sequence lengths follow the abundances) on
        # several threads' heaps, which fragment: RSS crept up by 1.4 GB over 300 steps on a
        # flight line until the free pages were handed back.
        release_memory()
        key = (m.overall_accuracy, -self.history[-1]["loss"] if self.history else 0.0)
        if key[0] > self.best_key[0]:
            self.best_oa_step = step
        if key > self.best_key:
            self.best_key, self.best_step, self.best_val = key, step, m
            self.best_state = copy.deepcopy(self.net.state_dict())
        self.history[-1]["val_oa"] = m.overall_accuracy

    def run(self) -> bool:
        """All steps, validating every ``val_every``; True when interrupted (Ctrl-C)."""
        o = self.opts
        bar = tqdm(total=o.steps, desc="train", unit="step", disable=not o.progress,
                   dynamic_ncols=True)
        step = 0
        try:
            for step in range(1, o.steps + 1):
                t0 = time.perf_counter()
                sums = self.step(step)
                self.history.append({"step": step, **sums,
                                     "lr": self.optim.param_groups[0]["lr"],
                                     "seconds": time.perf_counter() - t0, "val_oa": ""})
                if step % o.val_every == 0 or step == o.steps:
                    self.validate(step)
                    # Patience counts validations whose OA did not rise (a lower loss at the
                    # same OA keeps the newer state, but is no progress: at an OA of 1 it
                    # would never stop).
                    if o.patience and step - self.best_oa_step >= o.patience * o.val_every \
                            and step < o.steps:
                        self.stopped_early = step
                        if o.progress:
                            bar.write(f"validation OA has not risen for {o.patience} "
                                      f"validations: stopped at step {step} of {o.steps}")
                        break
                bar.set_postfix(loss=f"{sums['loss']:.3f}", ce=f"{sums['ce']:.3f}",
                                sad=f"{sums['sad']:.3f}",
                                val_oa=f"{self.best_key[0]:.3f}" if self.best_val else "-")
                bar.update(1)
        except KeyboardInterrupt:
            bar.write("interrupted: keeping the best model so far")
            if self.history and self.best_state is None:
                self.validate(step)
            return True
        finally:
            bar.close()
        return False
