"""SalinasA (.mat benchmark) -> train -> predict -> evaluate, with georeferenced outputs.

The .mat cube has no map coordinates, so it is first written as a GeoTIFF with a CRS and
transform you choose (here UTM 10N, 3.7 m, roughly where the Salinas Valley is): from then on it
is a scene like any flight line.

    python examples/salinas_mat.py --steps 200 -o salinas-output
"""

from __future__ import annotations

import argparse
from pathlib import Path

import rasterio
from affine import Affine

from hsimap import (
    TrainOptions,
    evaluate,
    load_labels,
    load_model,
    open_scene,
    train,
    write_outputs,
)

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
    truth = out / "salinasA_truth.tif"
    with rasterio.open(truth, "w", driver="GTiff", width=cube.sizes["x"],
                       height=cube.sizes["y"], count=1, dtype="uint8", nodata=0,
                       crs="EPSG:32610", transform=transform) as dst:
        dst.write(labels.astype("uint8"), 1)

    result = train(scene, labels, table, out / "model", TrainOptions(steps=args.steps))
    print(f"test OA {result.test_metrics.overall_accuracy:.4f} (model.json has the rest)")
    report = write_outputs(scene, load_model(out / "model"), out / "maps", overwrite=True)
    ev = evaluate(report.paths["classes"], truth, split=out / "model" / "split.tif",
                  subset="test")
    m = ev.metrics
    print(f"from the written map, test pixels: OA {m.overall_accuracy:.4f} kappa {m.kappa:.4f}")


if __name__ == "__main__":
    main()
