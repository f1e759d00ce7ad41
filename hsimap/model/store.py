"""The model folder: the one place it is written and read.

A model folder holds ``model.safetensors`` (the network's weights; never a pickle),
``model.json`` (the :class:`ModelCard`), ``history.csv`` (one row a step) and ``split.tif``
(which labelled pixels trained, validated and tested the model). A model whose classes come
from a baseline (``hsimap train --classifier svm|rf|auto``) also holds
``classifier.safetensors``, the baseline's arrays (:mod:`hsimap.model.baselines`); an SVM or
forest alone has no network, hence no abundances. :func:`save_model` writes them all, each
under a temporary name first; :func:`load_model` reads the weights and the card.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hsimap._version import __version__
from hsimap.classes import ClassTable, Split
from hsimap.errors import HsimapError
from hsimap.io.files import output_stem
from hsimap.io.outputset import OutputSet
from hsimap.io.qml import classes_qml
from hsimap.io.rasters import Grid, write_raster
from hsimap.model.baselines import KINDS, PixelClassifier
from hsimap.model.network import ModelConfig, UnmixingGuidedMamba
from hsimap.model.precision import precision_of, resolve_precision, set_precision

WEIGHTS = "model.safetensors"
CLASSIFIER = "classifier.safetensors"
CARD = "model.json"
HISTORY = "history.csv"
SPLIT = "split.tif"
FORMAT = "hsimap-model/1"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
SPLIT_TABLE = ClassTable([s.value for s in Split], [s.name.lower() for s in Split],
                         zero="unlabelled")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Scaling:
    """Input scaling, computed once on the training scene and applied to every window."""

    min: float
    max: float
    method: str = "global min-max over valid pixels of the training scene"


@dataclass
class ModelCard:
    """``model.json``: what applying the model needs, and how it was made.

    The first block is the contract inference relies on; the records after it (protocol,
    options, metrics) document the run and are kept as written.
    """

    config: ModelConfig
    classes: ClassTable
    scene_bands: int
    bands_used: list[int]
    scaling: Scaling
    window: int
    halo: int
    endmember_names: list[str]
    scene_wavelengths: list[float] | None = None
    excluded_bands: list[int] = field(default_factory=list)  # no data over the scene
    scene: str | None = None
    scenes: list[str] | None = None    # every scene of a model trained on several
    hsimap_version: str = ""
    created: str = field(default_factory=_now)
    model_hash: str | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    validation_metrics: dict[str, Any] | None = None
    test_metrics: dict[str, Any] | None = None
    # Which classifier gives the classes: None (or kind "mamba") the network; "svm" or "rf" a
    # baseline in classifier.safetensors, with "unmixing": whether the network is there too
    # (for abundances), and, for --classifier auto, every candidate's validation OA.
    classifier: dict[str, Any] | None = None
    format: str = FORMAT

    # model.json's key order, as hsimap has always written it.
    _ORDER = ("hsimap_version", "created", "scene", "scenes", "scene_bands", "scene_wavelengths",
              "bands_used", "excluded_bands", "scaling", "classes", "window", "halo",
              "endmember_names",
              "protocol", "options", "versions", "model_hash", "classifier", "training",
              "validation_metrics", "test_metrics", "config", "format")

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(config=self.config.to_dict(), classes=self.classes.to_dict(),
                      scaling={"method": self.scaling.method, "min": self.scaling.min,
                               "max": self.scaling.max})
        # "scenes" only for a model of several, "classifier" only for one that has a baseline:
        # a card reads as it always has.
        return {k: values[k] for k in self._ORDER
                if (k != "scenes" or self.scenes) and (k != "classifier" or self.classifier)}

    @property
    def baseline(self) -> str | None:
        """"svm" or "rf" when a baseline gives the classes, else None."""
        kind = (self.classifier or {}).get("kind")
        return kind if kind in KINDS else None

    @property
    def has_network(self) -> bool:
        """Whether the folder holds the network (an SVM or forest alone has none)."""
        return self.baseline is None or bool(self.classifier.get("unmixing", False))

    @classmethod
    def from_dict(cls, d: Any, source: str | Path = CARD) -> ModelCard:
        """Parse a card, refusing in one line what is missing or of the wrong type."""
        if not isinstance(d, dict):
            raise HsimapError(f"{source}: not an hsimap model card (expected a JSON object)")
        required = ("config", "classes", "scene_bands", "bands_used", "scaling", "window",
                    "halo", "endmember_names")
        missing = [k for k in required if k not in d]
        if missing:
            raise HsimapError(f"{source}: not an hsimap model card (missing "
                              f"{', '.join(missing)})")
        try:
            card = cls(
                config=ModelConfig(**d["config"]),
                classes=ClassTable.from_dict(d["classes"]),
                scene_bands=int(d["scene_bands"]),
                bands_used=[int(b) for b in d["bands_used"]],
                scaling=Scaling(float(d["scaling"]["min"]), float(d["scaling"]["max"]),
                                str(d["scaling"].get("method", Scaling.method))),
                window=int(d["window"]), halo=int(d["halo"]),
                endmember_names=[str(n) for n in d["endmember_names"]],
                **{k: d[k] for k in ("scene_wavelengths", "excluded_bands", "scene", "scenes",
                                     "hsimap_version",
                                     "created", "model_hash", "protocol", "options",
                                     "versions", "training", "validation_metrics",
                                     "test_metrics", "classifier", "format") if k in d},
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise HsimapError(f"{source}: not an hsimap model card ({type(exc).__name__}: "
                              f"{exc})") from None
        if card.scene_wavelengths is not None:
            card.scene_wavelengths = [float(v) for v in card.scene_wavelengths]
        card.check(source)
        return card

    def check(self, source: str | Path = CARD) -> None:
        """Refuse a card of an unknown format, or one that contradicts itself, in one line:
        a model applied through such a card would give wrong maps or fail deep inside."""
        if self.format != FORMAT:
            raise HsimapError(f"{source}: format {self.format!r}, but this hsimap "
                              f"({__version__}) reads {FORMAT!r}; use the hsimap that wrote "
                              "it, or train the model again")
        cfg, n_ids = self.config, len(self.classes.ids)
        problems = []
        if len(set(self.classes.ids)) != n_ids:
            dup = sorted({i for i in self.classes.ids if self.classes.ids.count(i) > 1})
            problems.append(f"class ids {dup} appear twice")
        if n_ids != cfg.classes:
            problems.append(f"{n_ids} class ids for the {cfg.classes} outputs of the network")
        if len(self.endmember_names) != cfg.endmembers:
            problems.append(f"{len(self.endmember_names)} endmember names for "
                            f"{cfg.endmembers} endmembers")
        if len(self.bands_used) != cfg.bands:
            problems.append(f"{len(self.bands_used)} bands_used for a network of {cfg.bands} "
                            "bands")
        if self.bands_used and not (0 <= min(self.bands_used) and
                                    max(self.bands_used) < self.scene_bands):
            problems.append(f"bands_used reach band {max(self.bands_used)}, beyond the "
                            f"scene's {self.scene_bands}")
        if self.scene_wavelengths is not None and \
                len(self.scene_wavelengths) != self.scene_bands:
            problems.append(f"{len(self.scene_wavelengths)} wavelengths for "
                            f"{self.scene_bands} scene bands")
        if not 0 <= 2 * self.halo < self.window:
            problems.append(f"halo {self.halo} for window {self.window}")
        if self.classifier is not None and (not isinstance(self.classifier, dict) or
                                            self.classifier.get("kind") not in
                                            ("mamba", *KINDS)):
            problems.append(f"classifier {self.classifier!r} is not one hsimap knows")
        if problems:
            raise HsimapError(f"{source}: the model card contradicts itself ("
                              f"{'; '.join(problems)}); it was edited or damaged")


@dataclass
class TrainedModel:
    """A network, or a baseline classifier, or both, with what they need to be applied to a
    scene. The network (when there is one) unmixes; the baseline (when there is one) gives
    the classes in its place."""

    network: UnmixingGuidedMamba | None
    card: ModelCard
    classifier: PixelClassifier | None = None

    @property
    def config(self) -> ModelConfig:
        return self.network.cfg if self.network is not None else self.card.config

    @property
    def unmixes(self) -> bool:
        """Whether the model gives abundances, reconstruction errors and endmembers."""
        return self.network is not None

    @property
    def band_indices(self) -> np.ndarray:
        return np.asarray(self.card.bands_used, dtype=int)

    @property
    def scale(self) -> tuple[float, float]:
        return self.card.scaling.min, self.card.scaling.max

    @property
    def class_table(self) -> ClassTable:
        return self.card.classes

    @property
    def window(self) -> int:
        return self.card.window

    @property
    def halo(self) -> int:
        return self.card.halo

    @property
    def endmember_names(self) -> list[str]:
        # Cards of hsimap 0.2 hold names with commas, which the .sli header turns into ';':
        # made safe here, so that the abundance bands and the library agree for them too.
        from hsimap.io.speclib import envi_safe_name

        return [envi_safe_name(n) for n in self.card.endmember_names]

    @property
    def device(self) -> torch.device:
        if self.network is None:
            return torch.device("cpu")
        return next(self.network.parameters()).device

    @property
    def precision(self) -> str | None:
        """``fp32`` or ``bf16``: what the network's heavy layers compute in (None: no
        network; a baseline classifier computes in float64)."""
        return None if self.network is None else precision_of(self.network)

    def use_precision(self, name: str) -> str | None:
        """Compute in ``name`` (``auto``, ``fp32``, ``bf16``) from now on; returns what ``auto``
        became on this model's device."""
        if self.network is None:
            return None
        set_precision(self.network, resolve_precision(name, self.device))
        return self.precision

    def endmember_spectra(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean endmember spectra (P, bands used) in the scene's physical units, and their
        wavelengths (nm) when the training scene had them."""
        if self.network is None:
            raise HsimapError(f"the model is --classifier {self.card.baseline} alone: it has no "
                              "endmembers (train with --classifier auto for abundances beside "
                              "it)")
        lo, hi = self.scale
        e = self.network.unmixing.mean_endmembers().detach().cpu().numpy()
        wl = self.card.scene_wavelengths
        return e * (hi - lo) + lo, (np.asarray(wl)[self.band_indices] if wl else None)


def model_hash(net: torch.nn.Module | None,
               classifier: dict[str, np.ndarray] | None = None) -> str:
    """A short digest of the weights (and a baseline's arrays): which model made an output
    (batch manifests, provenance)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()) if net is not None else ():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    for k, a in sorted((classifier or {}).items()):
        h.update(f"classifier.{k}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def check_model_folder(out_dir: str | Path, overwrite: bool) -> Path:
    """Refuse a folder that holds a model already (unless ``overwrite``) or cannot be written,
    before any work is done."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise HsimapError(f"{out}: exists and is not a folder")
    if (out / CARD).exists() and not overwrite:
        raise HsimapError(f"{out}: holds a model already; use --overwrite to replace it")
    if out.is_dir() and not overwrite:
        others = sorted(p.name for p in out.iterdir() if not p.name.startswith(".hsimap-"))
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise HsimapError(f"{out}: holds other files ({shown}); write the model to a new "
                              "or empty folder, or --overwrite (which replaces only the "
                              "model's own files)")
    parent = out if out.exists() else out.parent if str(out.parent) else Path(".")
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise HsimapError(f"{parent}: folder is not writable")
    return out


def save_model(out_dir: str | Path, network: UnmixingGuidedMamba | None, card: ModelCard, *,
               history: list[dict[str, Any]] | None = None,
               splits: dict[str, tuple[np.ndarray, Grid]] | None = None,
               overwrite: bool = False,
               classifier: dict[str, np.ndarray] | None = None) -> Path:
    """Write the model folder: weights, card, and (when given) history, split rasters
    (file name -> split codes and their scene's grid) and a baseline's arrays (the card's
    ``classifier`` says which).

    The files appear together (:class:`~hsimap.io.outputset.OutputSet`): a run killed while
    saving leaves the previous model whole, and a model never mixes two runs' files.
    """
    out = check_model_folder(out_dir, overwrite)
    if (classifier is None) != (card.baseline is None) or \
            (network is None) == (card.has_network):
        raise ValueError("the card's classifier does not match what is saved")
    out.mkdir(parents=True, exist_ok=True)
    if network is not None:
        card.config = network.cfg
    # The set's own names only: a previous model's split rasters (as its card names them),
    # never other split*.tif files a user keeps in the folder.
    written = set((splits or {}).keys())
    card.training = {**(card.training or {}), "split_files": sorted(written)}
    splits_now = written | _model_split_files(out)
    # Each split raster with its QGIS style (loaded on open: four entries, not a 256-colour
    # palette's legend).
    family = {WEIGHTS, CLASSIFIER, CARD, HISTORY} | splits_now | {
        str(Path(n).with_suffix(".qml")) for n in splits_now}
    with OutputSet(out, "model", family, overwrite=overwrite) as files:
        if network is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
            save_file(state, str(files.path(WEIGHTS)), metadata={"format": FORMAT})
        if classifier is not None:
            from safetensors.numpy import save_file as save_arrays

            save_arrays({k: np.ascontiguousarray(v) for k, v in classifier.items()},
                        str(files.path(CLASSIFIER)), metadata={"format": FORMAT,
                                                               "kind": card.baseline})
        if history:
            with open(files.path(HISTORY), "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(history[0].keys()))
                w.writeheader()
                w.writerows(history)
        for name, (codes, grid) in (splits or {}).items():
            write_raster(files.path(name), codes, grid, class_table=SPLIT_TABLE)
            files.path(str(Path(name).with_suffix(".qml"))).write_text(classes_qml(SPLIT_TABLE))
        files.path(CARD).write_text(json.dumps(card.to_dict(), indent=2))
        for f in files.staging.iterdir():
            os.chmod(f, 0o644)
    return out


def _model_split_files(out: Path) -> set[str]:
    """The split rasters the model in ``out`` wrote (none when there is no model): listed in
    its card since 0.2; before, ``split.tif``, or ``split_<stem>.tif`` per scene it lists."""
    try:
        raw = json.loads((out / CARD).read_text())
    except (OSError, ValueError):
        return set()
    listed = (raw.get("training") or {}).get("split_files")
    if listed is not None:
        return {str(n) for n in listed if "/" not in str(n)}
    return set(split_file_names(raw.get("scenes") or [None]))


def split_file_names(sources: list[str | None]) -> list[str]:
    """``split.tif`` for one scene; ``split_<stem>.tif`` for several (``_2``... when two
    scenes share a stem)."""
    if len(sources) == 1:
        return [SPLIT]
    names: list[str] = []
    for src in sources:
        base, k = f"split_{output_stem(src or 'scene')}", 1
        name = f"{base}.tif"
        while name in names:
            k += 1
            name = f"{base}_{k}.tif"
        names.append(name)
    return names


def load_model(model_dir: str | Path, device: str | torch.device = "cpu",
               precision: str = "auto") -> TrainedModel:
    """Load a model folder. Only safetensors and JSON are read: nothing is unpickled.

    ``precision`` (``auto``, ``fp32``, ``bf16``): what the network's heavy layers compute in
    (:mod:`hsimap.model.precision`); every command that applies a model loads it here, so all
    of them agree unless told otherwise.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise HsimapError(f"{d}: not a model folder (expected the folder `hsimap train` wrote)")
    weights, card_path = d / WEIGHTS, d / CARD

    def missing() -> HsimapError:
        pickles = [p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = (f"; {', '.join(pickles)} may be pickles, which hsimap never loads" if pickles
                else "")
        return HsimapError(f"{d}: no {WEIGHTS} + {CARD} in this folder{hint}")

    if not card_path.exists():
        raise missing()
    try:
        raw = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HsimapError(f"{card_path}: not an hsimap model card ({exc})") from None
    card = ModelCard.from_dict(raw, card_path)
    classifier = _load_classifier(d / CLASSIFIER, card) if card.baseline else None
    if not card.has_network:
        _check_hash(d, card, None, classifier)
        return TrainedModel(None, card, classifier)
    if not weights.exists():
        pickles = [p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = (f"; {', '.join(pickles)} may be pickles, which hsimap never loads" if pickles
                else " (an incomplete copy of the model folder?)")
        raise HsimapError(f"{d}: {CARD} is here but {WEIGHTS} is missing{hint}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise HsimapError(f"{weights}: not a safetensors file ({exc}); hsimap never unpickles "
                          "model files") from None
    net = UnmixingGuidedMamba(card.config)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
        detail = "; ".join(lines[:3]) or str(exc).splitlines()[0]
        raise HsimapError(f"{weights}: weights do not match the model card ({detail})") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise HsimapError(f"{weights}: weights hold NaN or infinite values ({bad[0]}, ...); "
                          "the model is damaged, train it again")
    _check_hash(d, card, net, classifier)
    net.eval()
    dev = torch.device(device)
    net.to(dev)
    if dev.type == "cuda":
        from hsimap.model.mamba import use_cuda_kernels

        use_cuda_kernels(net)
    model = TrainedModel(net, card, classifier)
    model.use_precision(precision)
    return model


def _check_hash(d: Path, card: ModelCard, net: torch.nn.Module | None,
                classifier: PixelClassifier | None) -> None:
    """The weights must be the ones the card describes: its test metrics, names and hash
    (which batch's manifest and every output's provenance quote) belong to them. Weights
    copied from another run, or arrays edited by hand, are refused."""
    if not card.model_hash:
        return
    got = model_hash(net, classifier.arrays if classifier is not None else None)
    if got != card.model_hash:
        raise HsimapError(f"{d}: its weights are not the ones its {CARD} describes (hash {got}, "
                          f"the card says {card.model_hash}): files of two runs, or damaged; "
                          "train it again")


def _load_classifier(path: Path, card: ModelCard) -> PixelClassifier:
    """A baseline's arrays (safetensors, read as numpy: nothing is unpickled), checked against
    the card."""
    from safetensors.numpy import load_file as load_arrays

    if not path.exists():
        raise HsimapError(f"{path.parent}: no {CLASSIFIER} in this folder (its card says its "
                          f"classes come from --classifier {card.baseline})")
    try:
        arrays = load_arrays(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise HsimapError(f"{path}: not a safetensors file ({exc}); hsimap never unpickles "
                          "model files") from None
    clf = PixelClassifier(card.baseline, arrays, len(card.classes.ids))
    problem = clf.check(len(card.bands_used))
    if problem:
        raise HsimapError(f"{path}: {problem}; the model is damaged, train it again")
    return clf


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when a GPU is there; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HsimapError("--device cuda: no CUDA GPU is available (use --device cpu or auto)")
    return torch.device(name)
