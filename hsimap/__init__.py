"""hsimap: unmixing-guided spatial-spectral Mamba for whole hyperspectral scenes.

The public API, each a step of the command of the same name::

    scene = hsimap.open_scene("flight.hdr")
    labels, classes = hsimap.load_labels("fields.gpkg", scene)
    result = hsimap.train(scene, labels, classes, "model/")
    model = hsimap.load_model("model/")
    report = hsimap.predict_scene(scene, model, "maps/", hsimap.PredictOptions())
    ds = hsimap.predict(scene, model)            # lazy xarray, for your own processing
    hsimap.unmix(scene, "unmixed/")
    ev = hsimap.evaluate("maps/flight_classes.tif", "reference.gpkg", stratified=True)
"""

import os as _os

# torch's OpenMP threads spin while they wait; two runs on one machine then took 7.4x as long
# as one alone, 1.4x with waiting threads asleep (benchmarks/contention.py). Set before torch
# is imported; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# A thread count that is not one (OMP_NUM_THREADS=0, "two") makes libgomp print its own
# complaint when torch loads; taken out before it does, and said once by the CLI.
IGNORED_ENVIRONMENT: list[str] = []
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    _value = _os.environ.get(_name)
    if _value is not None and not (_value.strip().isdigit() and int(_value) > 0):
        IGNORED_ENVIRONMENT.append(f"{_name}={_value}")
        del _os.environ[_name]

from hsimap._version import __version__  # noqa: E402
from hsimap.errors import HsimapError  # noqa: E402
from hsimap.io.scene import open_scene  # noqa: E402

__all__ = ["BatchOptions", "HsimapError", "OutputOptions", "PredictOptions", "SampleOptions",
           "SuggestOptions", "SynthSpec", "TrainOptions", "UnmixOptions", "evaluate",
           "load_labels", "load_model", "make_scene", "open_scene", "predict", "predict_scene",
           "prepare", "run_batch", "sample_map", "scene_info", "suggest", "train",
           "train_from_files", "unmix", "vectorize", "write_class_map", "write_outputs",
           "__version__"]

# Lazy: importing hsimap for I/O should not import torch.
_LAZY = {"predict": "hsimap.inference", "load_model": "hsimap.model.store",
         "train": "hsimap.workflows.train", "TrainOptions": "hsimap.workflows.train",
         "predict_scene": "hsimap.workflows.predict",
         "PredictOptions": "hsimap.workflows.options", "OutputOptions": "hsimap.products",
         "unmix": "hsimap.workflows.unmix", "UnmixOptions": "hsimap.workflows.unmix",
         "evaluate": "hsimap.workflows.evaluate", "load_labels": "hsimap.io.labels",
         "sample_map": "hsimap.workflows.sample", "run_batch": "hsimap.workflows.batch",
         "BatchOptions": "hsimap.workflows.batch", "scene_info": "hsimap.io.scene",
         "make_scene": "hsimap.synth", "SynthSpec": "hsimap.synth",
         "write_outputs": "hsimap.workflows.predict",
         "write_class_map": "hsimap.io.rasters", "prepare": "hsimap.inference",
         "train_from_files": "hsimap.workflows.train",
         "SampleOptions": "hsimap.workflows.sample", "suggest": "hsimap.workflows.suggest",
         "SuggestOptions": "hsimap.workflows.suggest",
         "vectorize": "hsimap.workflows.vectorize"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hsimap' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
