"""QGIS layer styles (``.qml``) that QGIS applies when it opens the raster beside them.

QGIS looks for ``<raster name without extension>.qml`` next to a raster it opens and loads it
as the layer's default style: the class map opens paletted with its class names and colours,
the abundances with a 0-1 colour ramp, instead of QGIS's stretched grey.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hsimap.classes import ClassTable

# viridis at 0, 0.25, 0.5, 0.75, 1: the ramp of the abundance quicklook.
VIRIDIS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]


def _document(renderer: ET.Element) -> str:
    root = ET.Element("qgis", version="3.28.0", styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    pipe.append(renderer)
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            + ET.tostring(root, encoding="unicode") + "\n")


def classes_qml(table: ClassTable) -> str:
    """A paletted renderer: one entry per class, its colour and name; 0 (nodata) not drawn."""
    r = ET.Element("rasterrenderer", type="paletted", band="1", opacity="1",
                   alphaBand="-1", nodataColor="")
    ET.SubElement(r, "rasterTransparency")
    palette = ET.SubElement(r, "colorPalette")
    for i, name, (red, green, blue) in zip(table.ids, table.names, table.colors, strict=True):
        ET.SubElement(palette, "paletteEntry", value=str(i), label=name, alpha="255",
                      color=f"#{red:02x}{green:02x}{blue:02x}")
    return _document(r)


def ramp_qml(band: int = 1, minimum: float = 0.0, maximum: float = 1.0,
             label: str = "fraction") -> str:
    """A single-band pseudocolour renderer, viridis from ``minimum`` to ``maximum``."""
    r = ET.Element("rasterrenderer", type="singlebandpseudocolor", band=str(band), opacity="1",
                   alphaBand="-1", classificationMin=str(minimum),
                   classificationMax=str(maximum), nodataColor="")
    ET.SubElement(r, "rasterTransparency")
    shader = ET.SubElement(ET.SubElement(r, "rastershader"), "colorrampshader",
                           colorRampType="INTERPOLATED", classificationMode="1", clip="0",
                           minimumValue=str(minimum), maximumValue=str(maximum),
                           labelPrecision="2")
    for k, color in enumerate(VIRIDIS):
        v = minimum + (maximum - minimum) * k / (len(VIRIDIS) - 1)
        ET.SubElement(shader, "item", value=f"{v:g}", color=color, alpha="255",
                      label=f"{v:g} {label}" if k in (0, len(VIRIDIS) - 1) else f"{v:g}")
    return _document(r)
