"""Model files: weights in safetensors, everything else in a JSON model card. Never pickle."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hsimap.errors import HsimapError
from hsimap.io.writers import ClassTable
from hsimap.model.network import ModelConfig, UnmixingGuidedMamba

WEIGHTS = "model.safetensors"
CARD = "model.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


@dataclass
class TrainedModel:
    """A network with what it needs to be applied to a scene."""

    network: UnmixingGuidedMamba
    card: dict[str, Any]

    @property
    def config(self) -> ModelConfig:
        return self.network.cfg

    @property
    def band_indices(self) -> np.ndarray:
        return np.asarray(self.card["bands_used"], dtype=int)

    @property
    def scale(self) -> tuple[float, float]:
        return float(self.card["scaling"]["min"]), float(self.card["scaling"]["max"])

    @property
    def class_table(self) -> ClassTable:
        return ClassTable.from_dict(self.card["classes"])

    @property
    def window(self) -> int:
        return int(self.card["window"])

    @property
    def halo(self) -> int:
        return int(self.card["halo"])

    @property
    def endmember_names(self) -> list[str]:
        return list(self.card["endmember_names"])

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device


def save_model(out_dir: str | Path, network: UnmixingGuidedMamba, card: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``model.json`` (each via a temporary name)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    card = dict(card, config=network.cfg.to_dict(), format="hsimap-model/1")
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    tmp_w, tmp_c = out / f".{WEIGHTS}.partial", out / f".{CARD}.partial"
    save_file(state, str(tmp_w), metadata={"format": "hsimap-model/1"})
    tmp_c.write_text(json.dumps(card, indent=2))
    os.replace(tmp_w, out / WEIGHTS)
    os.replace(tmp_c, out / CARD)


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Load a model folder. Only safetensors and JSON are read: nothing is unpickled."""
    d = Path(model_dir)
    if not d.is_dir():
        raise HsimapError(f"{d}: not a model folder (expected the folder `hsimap train` wrote)")
    weights, card_path = d / WEIGHTS, d / CARD
    if not weights.exists() or not card_path.exists():
        pickles = [p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = (f"; {', '.join(pickles)} may be pickles, which hsimap never loads" if pickles
                else "")
        raise HsimapError(f"{d}: no {WEIGHTS} + {CARD} in this folder{hint}")
    try:
        card = json.loads(card_path.read_text())
        cfg = ModelConfig(**card["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise HsimapError(f"{card_path}: not an hsimap model card ({exc})") from None
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise HsimapError(f"{weights}: not a safetensors file ({exc}); hsimap never unpickles "
                          "model files") from None
    net = UnmixingGuidedMamba(cfg)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise HsimapError(f"{weights}: weights do not match the model card ({first})") from None
    net.eval()
    dev = torch.device(device)
    net.to(dev)
    if dev.type == "cuda":
        from hsimap.model.mamba import use_cuda_kernels

        use_cuda_kernels(net)
    return TrainedModel(net, card)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when a GPU is there; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HsimapError("--device cuda: no CUDA GPU is available (use --device cpu or auto)")
    return torch.device(name)
