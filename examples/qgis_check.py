"""Open an hsimap output set in QGIS itself, headless, as an analyst's QGIS would.

Run with the Python that has QGIS (Debian: ``apt install python3-qgis``), not hsimap's venv::

    QT_QPA_PLATFORM=offscreen python3 examples/qgis_check.py OUTDIR/SCENE_classes.tif \
        [MOSAIC.vrt] [POLYGONS.gpkg] [POINTS.gpkg ...]

For the class map (and a batch mosaic): the style beside it loads, its renderer is paletted,
and its legend has one entry per class, with the names and colours of the raster's own
category table (GDAL's). For the abundances: the style is a pseudocolour ramp per band. For
vectorized polygons: every feature is valid to QGIS's GEOS, and Processing's Dissolve and
Clip run at their default settings (they stop on invalid geometries). Prints one line per
check and exits non-zero if any fails.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(paths: list[str]) -> int:
    from osgeo import gdal
    from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer

    app = QgsApplication([], False)
    app.initQgis()
    failures = 0

    def check(ok: bool, what: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}")

    for p in map(Path, paths):
        if p.suffix in (".tif", ".vrt"):
            layer = QgsRasterLayer(str(p), p.name)
            check(layer.isValid(), f"{p.name}: opens")
            msg, styled = layer.loadNamedStyle(str(p.with_suffix(".qml")))
            check(styled, f"{p.name}: its style loads ({msg})")
            r = layer.renderer()
            if p.stem.endswith("abundances"):
                check(r.type() == "singlebandpseudocolor", f"{p.name}: renderer {r.type()}")
                continue
            check(r.type() == "paletted", f"{p.name}: renderer {r.type()}")
            ds = gdal.Open(str(p))
            band = ds.GetRasterBand(1)
            # hsimap's class table travels in the raster itself (CLASS_NAMES); QGIS turns
            # GDAL's PAM off, so the .aux.xml's category names are not read here.
            import json

            names = json.loads(band.GetMetadataItem("CLASS_NAMES") or "{}")
            colours = band.GetColorTable()
            expected = {int(i): (n, colours.GetColorEntry(int(i))[:3])
                        for i, n in names.items()}
            legend = {c.value: (c.label, (c.color.red(), c.color.green(), c.color.blue()))
                      for c in r.classes()}
            check(legend == expected, f"{p.name}: legend of {len(legend)} entries equals its "
                                      f"{len(expected)} classes (names, colours)")
        elif p.suffix == ".gpkg" and _is_points(p):
            # sample and suggest layers: points labelled for the person filling them in
            layer = QgsVectorLayer(str(p), p.name, "ogr")
            check(layer.isValid() and layer.labelsEnabled(),
                  f"{p.name}: opens with its labels ({layer.featureCount()} points)")
        elif p.suffix in (".gpkg", ".shp", ".geojson"):
            import processing
            from processing.core.Processing import Processing

            Processing.initialize()
            layer = QgsVectorLayer(str(p), p.name, "ogr")
            check(layer.isValid(), f"{p.name}: opens ({layer.featureCount()} features)")
            # hsimap's polygons open in the class colours: the default style in the file
            check(layer.renderer().type() == "categorizedSymbol",
                  f"{p.name}: opens styled by class ({layer.renderer().type()})")
            invalid = [f.id() for f in layer.getFeatures() if not f.geometry().isGeosValid()]
            check(not invalid, f"{p.name}: every geometry valid to GEOS ({len(invalid)} not)")
            for alg, extra in (("native:dissolve", {"FIELD": []}),
                               ("native:clip", {"OVERLAY": str(p)})):
                try:
                    out = processing.run(alg, {"INPUT": str(p), **extra,
                                               "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"]
                    check(out.featureCount() > 0, f"{p.name}: Processing {alg} runs "
                                                  f"({out.featureCount()} features)")
                except Exception as exc:  # QgsProcessingException: the step a user would see
                    check(False, f"{p.name}: Processing {alg} stops ({exc})")
    app.exitQgis()
    return 1 if failures else 0


def _is_points(p: Path) -> bool:
    from osgeo import ogr

    ds = ogr.Open(str(p))
    return ds is not None and ds.GetLayer(0).GetGeomType() == ogr.wkbPoint


if __name__ == "__main__":
    sys.path.append("/usr/share/qgis/python/plugins")   # Processing, where Debian puts it
    sys.exit(main(sys.argv[1:]))
