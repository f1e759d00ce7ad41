"""A GeoTIFF product with wavelengths in its band metadata (as EnMAP writes them) and
training polygons drawn in QGIS, saved as a GeoPackage.

Here both are made up so the script runs anywhere: a synthetic EnMAP-like GeoTIFF (int16
reflectance x 10000, per-band `wavelength` items) and a GeoPackage of polygons in WGS84 with a
text `crop` attribute. With your own data, skip to `hsimap train` / `hsimap predict`:

    hsimap train product.tif -l fields.gpkg --class-field crop -o model/
    hsimap predict product.tif -m model/ -o maps/

    python examples/enmap_geotiff_polygons.py -o enmap-output
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely
from rasterio.warp import transform_geom

from hsimap import (
    SynthSpec,
    TrainOptions,
    load_labels,
    load_model,
    make_scene,
    open_scene,
    scene_info,
    train,
    write_outputs,
)

CROPS = {1: "wheat", 2: "maize", 3: "fallow", 4: "orchard"}


def polygons_from_truth(labels_tif: Path, gpkg: Path, per_class: int, seed: int) -> None:
    """Small squares inside each class's area, like an analyst's training polygons."""
    rng = np.random.default_rng(seed)
    with rasterio.open(labels_tif) as src:
        lab, t, crs = src.read(1), src.transform, src.crs
    geoms, names = [], []
    for cid, name in CROPS.items():
        rows, cols = np.nonzero(lab == cid)
        for k in rng.choice(len(rows), per_class, replace=False):
            r, c = rows[k], cols[k]
            x0, y0 = t * (c - 1, r - 1)
            x1, y1 = t * (c + 2, r + 2)
            square = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            geoms.append(shapely.geometry.shape(transform_geom(crs, "EPSG:4326", square)))
            names.append(name)
    pyogrio.raw.write(str(gpkg), geometry=shapely.to_wkb(np.array(geoms)),
                      field_data=[np.array(names, dtype=object)], fields=["crop"],
                      geometry_type="Polygon", crs="EPSG:4326", driver="GPKG")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", default="enmap-output")
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    made = make_scene(out / "product.tif",
                      SynthSpec(width=args.size, height=args.size, bands=60, classes=4,
                                endmembers=5, dtype="int16", crs="EPSG:32633", pixel_size=30,
                                origin=(380000, 5820000), region_size=args.size / 3,
                                class_names=list(CROPS.values())), overwrite=True)
    polygons_from_truth(made.labels, out / "fields.gpkg", per_class=6, seed=0)
    scene = open_scene(made.scene)
    info = scene_info(scene)
    print(f"{info.width} x {info.height} px, {info.bands} bands "
          f"{info.wavelength_range[0]:.0f}-{info.wavelength_range[1]:.0f} nm, {info.crs}")
    labels, table = load_labels(out / "fields.gpkg", scene, class_field="crop")
    print("classes from the polygons:", table.names)
    result = train(scene, labels, table, out / "model",
                   TrainOptions(steps=args.steps, hidden=64, train_fraction=0.5))
    report = write_outputs(scene, load_model(out / "model"), out / "maps", overwrite=True)
    print(f"validation OA {result.val_metrics.overall_accuracy:.3f}; maps in {out / 'maps'}")
    for p in report.paths.values():
        print(" ", p)


if __name__ == "__main__":
    main()
