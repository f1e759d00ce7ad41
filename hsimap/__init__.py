"""hsimap: unmixing-guided spatial-spectral Mamba for whole hyperspectral scenes."""

__version__ = "0.2.0"

from hsimap.errors import HsimapError  # noqa: E402
from hsimap.io.scene import open_scene  # noqa: E402

__all__ = ["HsimapError", "load_model", "open_scene", "predict", "train", "__version__"]

# Lazy: importing hsimap for I/O should not import torch.
_LAZY = {"predict": "hsimap.inference", "load_model": "hsimap.model.store",
         "train": "hsimap.workflows.train"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
