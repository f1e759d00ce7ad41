"""What a training run is asked (:class:`TrainOptions`, the scenes' label files paired by
:func:`pair_labels`) and what it gives back (:class:`TrainResult`): the types ``hsimap train``,
Python callers and benchmarks share. Without torch, so that a command refuses its options at
once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hsimap.errors import HsimapError
from hsimap.metrics import Metrics
from hsimap.model.baselines import KINDS
from hsimap.runtime import check_precision

if TYPE_CHECKING:  # torch stays unimported until a run needs it: options are refused at once
    from hsimap.model.store import TrainedModel

# What gives a model's classes: the network, a baseline alone, or the best on validation.
CHOICES = ("mamba", *KINDS, "auto")


@dataclass
class TrainOptions:
    """Everything ``hsimap train`` can be told. Flat, so that one line sets what a run changes;
    grouped here by what each setting governs."""

    # Architecture (ModelConfig): P, R, D, windows, ablations.
    endmembers: int | None = None      # default: classes + 2, at least 4
    variants: int = 10
    hidden: int = 128
    window: int = 64                   # the chip: training and prediction window, px
    halo: int = 8
    tokens: str = "cluster"
    unmixing: bool = True
    # Optimisation: a schedule in steps of ``batch`` chips.
    steps: int = 300
    batch: int = 4
    lr: float = 1e-3
    endmember_lr: float = 5e-4
    decay: float = 0.9
    val_every: int = 25
    # Stop once this many validations in a row have not raised the best validation OA (0:
    # run every step). The best state is kept either way; a scene that is learnt early (most
    # airborne ones) stops early, one that keeps improving runs to the end.
    patience: int = 3
    recon_weight: float = 0.01
    sparsity_weight: float = 0.001
    ema_alpha: float = 0.9
    ema_weight: float = 0.3
    # Regularisation for few labels (0: off, the method as published): spectral augmentation
    # (each pixel's brightness scaled by up to +-augment, and Gaussian noise of augment / 10
    # in the [0, 1] input), label smoothing of the cross-entropy, decoupled weight decay.
    augment: float = 0.0
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    # Protocol: which labelled pixels train, validate and test.
    train_per_class: int = 30
    val_per_class: int = 10
    train_fraction: float | None = None
    seed: int = 0
    # Bounded costs: validation and test samples, the chip cache.
    val_windows: int = 64
    test_windows: int = 256
    test_pixels: int = 50_000
    test_all: bool = False
    cache_mb: int = 512
    # Naming: the library whose nearest spectra name the endmembers (None: embedded USGS).
    name_library: str | None = None
    # Which classifier gives the classes: the network ("mamba"), a baseline alone ("svm",
    # "rf"), or the best of the three on the validation pixels ("auto").
    classifier: str = "mamba"
    # Runtime.
    device: str = "cpu"
    precision: str = "fp32"          # of the training steps: bf16 training is not measured
    threads: int | None = None
    progress: bool = True

    def check(self) -> None:
        """Refuse settings that cannot run, in one line each."""
        positive = {"steps": self.steps, "batch": self.batch, "variants": self.variants,
                    "hidden": self.hidden, "window": self.window, "val_every": self.val_every,
                    "val_windows": self.val_windows, "test_windows": self.test_windows,
                    "test_pixels": self.test_pixels, "cache_mb": self.cache_mb,
                    "train_per_class": self.train_per_class,
                    "val_per_class": self.val_per_class}
        for name, value in positive.items():
            if value < 1:
                raise HsimapError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.train_fraction is not None and not 0 < self.train_fraction < 1:
            raise HsimapError(f"--train-fraction must be above 0 and below 1 (a share of each "
                              f"class's labelled pixels), got {self.train_fraction:g}")
        if self.endmembers is not None and self.endmembers < 2:
            raise HsimapError(f"--endmembers must be at least 2, got {self.endmembers}")
        if self.hidden % 4:
            raise HsimapError(f"--hidden must be a multiple of 4, got {self.hidden}")
        if self.patience < 0:
            raise HsimapError(f"--patience must be 0 or more, got {self.patience}")
        if self.seed < 0:
            raise HsimapError(f"--seed must be non-negative, got {self.seed}")
        check_precision(self.precision)
        if self.threads is not None and self.threads < 1:
            raise HsimapError(f"--threads must be at least 1, got {self.threads}")
        if self.window < 8:
            raise HsimapError(f"--window must be at least 8 px, got {self.window}")
        for name in ("augment", "label_smoothing", "weight_decay"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise HsimapError(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
        if self.classifier not in CHOICES:
            raise HsimapError(f"--classifier must be one of {', '.join(CHOICES)}, got "
                              f"{self.classifier!r}")
        if not 0 <= 2 * self.halo < self.window:
            raise HsimapError(f"--halo must be non-negative and less than half the window "
                              f"({self.window}), got {self.halo}")


def pair_labels(scenes: Sequence[str | Path], labels: Sequence[str | Path],
                what: str = "label file") -> list[str | Path]:
    """One label file per scene: ``labels`` as given, or its one vector file for every scene.
    ``what`` names a label file in the message (the CLI says ``-l``)."""
    from hsimap.io.labels import VECTOR_SUFFIXES

    labels = list(labels)
    if len(labels) == 1 and len(scenes) > 1:
        if Path(labels[0]).suffix.lower() not in VECTOR_SUFFIXES:
            raise HsimapError(f"{len(scenes)} scenes and one {what} {labels[0]}: give one "
                              f"{what} per scene, or one vector file covering all of them")
        return labels * len(scenes)
    if len(labels) != len(scenes):
        raise HsimapError(f"{len(scenes)} scene(s) but {len(labels)} {what}: give one per "
                          "scene, in order, or one vector file for all")
    return labels


@dataclass
class TrainResult:
    model: TrainedModel
    best_step: int
    val_metrics: Metrics
    test_metrics: Metrics | None
    seconds: float
    seconds_per_step: float
    stopped_early: bool
    test_pixels: int = 0       # how many test pixels test_metrics scored
    # Every classifier fitted and its validation OA (one entry, except with --classifier auto).
    validation_oa: dict[str, float] = field(default_factory=dict)

    @property
    def classifier(self) -> str:
        """What gives the model's classes: "mamba", "svm" or "rf"."""
        return self.model.card.baseline or "mamba"
