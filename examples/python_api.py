"""Notebook-style use of the Python API: open a scene, predict a window, plot.

    python examples/python_api.py -o api-output
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import hsimap  # noqa: E402
from hsimap import SynthSpec, TrainOptions, load_labels, load_model, make_scene, train  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", default="api-output")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    made = make_scene(out / "scene.tif", SynthSpec(width=160, height=128, bands=32),
                      overwrite=True)

    scene = hsimap.open_scene(made.scene)          # lazy DataArray (band, y, x)
    print(scene.rio.crs, scene.rio.transform(), scene.wavelength.values[:3])
    labels, table = load_labels(made.labels, scene)
    train(scene, labels, table, out / "model",
          TrainOptions(steps=args.steps, hidden=32, window=64, halo=8, progress=False))
    model = load_model(out / "model")

    ds = hsimap.predict(scene, model)              # lazy: nothing computed yet
    window = ds.isel(y=slice(0, 64), x=slice(0, 64)).compute()   # only the tiles it needs
    fig, axes = plt.subplots(1, 1 + model.config.endmembers, figsize=(16, 3))
    axes[0].imshow(window.classes, interpolation="nearest")
    axes[0].set_title("classes")
    for ax, name in zip(axes[1:], window.endmember.values, strict=True):
        ax.imshow(window.abundances.sel(endmember=name), vmin=0, vmax=1)
        ax.set_title(name)
    fig.savefig(out / "window.png")
    spectra, wl = model.endmember_spectra()
    fig, ax = plt.subplots()
    ax.plot(wl, spectra.T)
    ax.set_xlabel("wavelength (nm)")
    fig.savefig(out / "endmembers.png")
    print(f"wrote {out / 'window.png'} and {out / 'endmembers.png'}")


if __name__ == "__main__":
    main()
