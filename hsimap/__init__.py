"""hsimap: unmixing-guided spatial-spectral Mamba for whole hyperspectral scenes."""

__version__ = "0.1.0"

from hsimap.errors import HsimapError  # noqa: E402
from hsimap.io.scene import open_scene  # noqa: E402

__all__ = ["HsimapError", "open_scene", "predict", "__version__"]


def __getattr__(name: str):
    # Lazy: importing hsimap for I/O should not import torch.
    if name == "predict":
        from hsimap.inference import predict

        return predict
    raise AttributeError(name)
