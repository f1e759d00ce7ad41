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


def _symbol(kind: str, name: str, color: tuple[int, int, int], props: dict[str, str]
            ) -> ET.Element:
    """A one-layer QGIS symbol (``fill`` or ``marker``) of ``color``."""
    sym = ET.Element("symbol", type=kind, name=name, alpha="1", clip_to_extent="1",
                     force_rhr="0")
    layer = ET.SubElement(sym, "layer", {"class": "SimpleFill" if kind == "fill"
                                         else "SimpleMarker"}, enabled="1", locked="0",
                          pass_="0")
    layer.attrib["pass"] = layer.attrib.pop("pass_")
    options = ET.SubElement(layer, "Option", type="Map")
    for k, v in {"color": "{},{},{},255".format(*color), **props}.items():
        ET.SubElement(options, "Option", name=k, value=v, type="QString")
    return sym


def _vector_document(renderer: ET.Element, labels: str | None) -> str:
    root = ET.Element("qgis", version="3.22.0", styleCategories="Symbology|Labeling")
    root.append(renderer)
    if labels is not None:   # a label expression, drawn with a white halo
        lab = ET.SubElement(root, "labeling", type="simple")
        settings = ET.SubElement(lab, "settings", calloutType="simple")
        style = ET.SubElement(settings, "text-style", fieldName=labels, isExpression="1",
                              fontSize="9", textColor="0,0,0,255", fontFamily="Sans Serif")
        ET.SubElement(style, "text-buffer", bufferDraw="1", bufferSize="1",
                      bufferColor="255,255,255,255")
        ET.SubElement(settings, "placement", placement="6", dist="2")
        ET.SubElement(settings, "rendering", drawLabels="1")
    ET.SubElement(root, "labelsEnabled").text = "1" if labels is not None else "0"
    ET.indent(root)
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            + ET.tostring(root, encoding="unicode") + "\n")


def points_qml(id_field: str) -> str:
    """Points to label by hand: a ringed marker, labelled with the point's id and, once filled
    in, its reference class (not the map's class: the reference must not be read off it)."""
    r = ET.Element("renderer-v2", type="singleSymbol", symbollevels="0", forceraster="0",
                   enableorderby="0")
    symbols = ET.SubElement(r, "symbols")
    symbols.append(_symbol("marker", "0", (255, 255, 0),
                           {"name": "circle", "size": "3", "outline_color": "0,0,0,255",
                            "outline_width": "0.4"}))
    return _vector_document(r, f'"{id_field}" || coalesce(\': \' || "reference", \'\')')


def polygons_qml(table: ClassTable, field: str = "class_id") -> str:
    """Polygons of a class map: one category per class, its colour and name, as the raster's
    own style draws them."""
    r = ET.Element("renderer-v2", type="categorizedSymbol", attr=field, symbollevels="0",
                   forceraster="0", enableorderby="0")
    cats = ET.SubElement(r, "categories")
    symbols = ET.SubElement(r, "symbols")
    for k, (i, name, color) in enumerate(zip(table.ids, table.names, table.colors,
                                             strict=True)):
        ET.SubElement(cats, "category", value=str(i), label=name, symbol=str(k),
                      render="true")
        symbols.append(_symbol("fill", str(k), color,
                               {"style": "solid", "outline_style": "no"}))
    return _vector_document(r, None)
