"""The analyst's loop on the embedded demo scene (docs/workflow.md), the commands as a user
types them; the labelling a person does in QGIS is played from the demo's truth map.

    make demo                              # demo-output/: scene, model, maps
    .venv/bin/python examples/analyst_loop.py demo-output
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely

from hsimap.io.points import data_layer


def hsimap(*args: object) -> str:
    cmd = ["hsimap", *map(str, args)]
    print("$ " + shlex.join(cmd), flush=True)
    r = subprocess.run([sys.executable, "-m", "hsimap", *map(str, args)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        sys.exit(r.stderr.strip())
    print(r.stdout.rstrip())
    return r.stdout


def label_in_qgis(points: Path, truth: Path) -> None:
    """What the analyst does at step 3: the class seen at each point into ``reference``."""
    # The GeoPackage also holds a layer_styles table (its QGIS style): read the sample layer.
    layer = data_layer(points)
    meta, _, geom, fields = pyogrio.raw.read(points, layer=layer)
    info = pyogrio.read_info(points, layer=layer)
    pts = shapely.from_wkb(geom)
    with rasterio.open(truth) as src:
        rows, cols = rasterio.transform.rowcol(src.transform, shapely.get_x(pts),
                                               shapely.get_y(pts))
        seen = src.read(1)[np.asarray(rows), np.asarray(cols)].astype(np.int32)
    names = list(meta["fields"])
    fields = list(fields)
    fields[names.index("reference")] = seen
    mask = [np.zeros(len(seen), bool)] * len(names)
    mask[names.index("reference")] = seen == 0     # nothing seen there: left empty
    pyogrio.raw.write(points, geom, fields, fields=names, field_mask=mask, driver="GPKG",
                      geometry_type="Point", crs=meta["crs"], layer=points.stem,
                      layer_metadata=info.get("layer_metadata"))
    print(f"  (QGIS, played: {int((seen > 0).sum())} of {len(seen)} points labelled)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default="demo-output")
    d = Path(ap.parse_args(argv).folder)
    scene, truth, maps = d / "demo_scene.tif", d / "demo_scene_labels.tif", d / "maps"
    if not (d / "model" / "model.json").exists():
        sys.exit(f"{d}: run `make demo` (or `hsimap demo -o {d}`) first")
    # 1. The map and how sure it is, per class.
    hsimap("-q", "predict", scene, "-m", d / "model", "-o", maps, "--probabilities",
           "--overwrite")
    # 2. A reference sample drawn from the map, sized for a target precision.
    hsimap("sample", maps / "demo_scene_classes.tif", "-o", d / "sample.gpkg", "--overwrite")
    # 3. Labelling it.
    label_in_qgis(d / "sample.gpkg", truth)
    # 4. Accuracy and areas with confidence intervals.
    out = hsimap("evaluate", maps / "demo_scene_classes.tif", "-l", d / "sample.gpkg",
                 "--class-field", "reference", "--stratified", "--json")
    rep = json.loads(out.splitlines()[-1])
    adj = rep["area_adjusted"]
    print(f"  overall accuracy {adj['overall_accuracy']:.4f} "
          f"+- {adj['overall_accuracy_ci95']:.4f} (95%)")
    with rasterio.open(truth) as src, rasterio.open(maps / "demo_scene_classes.tif") as m:
        t, p = src.read(1), m.read(1)
    inside = (t > 0) & (p > 0)
    print(f"  true overall accuracy of the map: {(t[inside] == p[inside]).mean():.4f}")
    # 5. Where to label next.
    hsimap("suggest", scene, "-m", d / "model", "-o", d / "next.gpkg", "-n", 40,
           "-l", d / "model" / "split.tif", "--overwrite")


if __name__ == "__main__":
    main()
