"""SalinasA (.mat benchmark) -> train -> predict -> evaluate, with georeferenced outputs.

The .mat cube has no map coordinates, so it is first written as a GeoTIFF with a CRS and
transform you choose (here UTM 10N, 3.7 m, roughly where the Salinas Valley is): from then on it
is a scene like any flight line.

    python examples/salinas_mat.py --steps 200 -o salinas-output
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from hsimap.io.labels import load_labels
from hsimap.io.rasters import Grid, write_raster
from hsimap.io.scene import open_scene
from hsimap.metrics import classification_metrics
from hsimap.model.store import load_model
from hsimap.products import write_outputs
from hsimap.workflows.train import TrainOptions, train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "salinasA"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", default="salinas-output")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    cube = open_scene(Path(args.data) / "SalinasA_corrected.mat")
    labels, table = load_labels(Path(args.data) / "SalinasA_gt.mat", cube)
    transform = Affine(3.7, 0, 620000.0, 0, -3.7, 4063000.0)
    tif = out / "salinasA.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=cube.sizes["x"],
                       height=cube.sizes["y"], count=cube.sizes["band"], dtype="int16",
                       crs="EPSG:32610", transform=transform) as dst:
        dst.write(cube.values)
    scene = open_scene(tif)
    write_raster(out / "salinasA_truth.tif", labels.astype("uint8"), Grid.from_scene(scene),
                 class_table=table, overwrite=True)

    result = train(scene, labels, table, out / "model", TrainOptions(steps=args.steps))
    print(f"test OA {result.test_metrics.overall_accuracy:.4f} (model.json has the rest)")
    report = write_outputs(scene, load_model(out / "model"), out / "maps", overwrite=True)
    with rasterio.open(report.paths["classes"]) as src:
        pred = src.read(1)
    with rasterio.open(out / "model" / "split.tif") as src:
        test = src.read(1) == 3
    m = classification_metrics(np.where(test, labels, 0), pred, table.ids)
    print(f"from the written map, test pixels: OA {m.overall_accuracy:.4f} kappa {m.kappa:.4f}")


if __name__ == "__main__":
    main()
