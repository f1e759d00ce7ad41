"""A STAC Item describing one output set, for catalogues (pystac, optional: ``hsimap[stac]``).

Asset links are relative (``./S_classes.tif``), so the set can be moved or uploaded as a whole.
The Item's datetime is ``when`` (an acquisition time the caller trusts) or else the source
scene file's modification time; ``hsimap:datetime_source`` says which.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from hsimap.classes import ClassTable
from hsimap.errors import HsimapError
from hsimap.io.rasters import Grid

MEDIA = {".tif": "image/tiff; application=geotiff", ".png": "image/png", ".csv": "text/csv",
         ".qml": "application/xml", ".sli": "application/octet-stream",
         ".hdr": "text/plain", ".xml": "application/xml"}
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
ROLES = {".tif": ["data"], ".png": ["overview"], ".csv": ["metadata"], ".qml": ["metadata"],
         ".sli": ["data"], ".hdr": ["metadata"], ".xml": ["metadata"]}


def acquisition_time(scene) -> datetime | None:
    """When the scene was acquired, from the sensor's metadata (ENVI ``acquisition time``,
    EnMAP's ``start_time``, ...), as read by :func:`hsimap.io.scene.open_scene`; None when
    it names none or names it in a form ISO 8601 cannot read."""
    text = scene.attrs.get("acquisition_time")
    if not text:
        return None
    try:
        when = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def require_pystac() -> None:
    try:
        import pystac  # noqa: F401
    except ImportError:
        raise HsimapError("--stac needs pystac: pip install 'hsimap[stac]'") from None


def write_item(path: Path, item_id: str, grid: Grid, assets: dict[str, Path],
               properties: dict[str, str], when: datetime | None, cog: bool = False,
               classes: ClassTable | None = None, endmembers: list[str] | None = None) -> Path:
    """Write ``path``: an Item with the grid's footprint in WGS84, its projection, and
    ``assets`` (key -> file beside ``path``). ``classes``: the class map's and the
    probabilities' classes (STAC classification extension: value, name as written in every
    other file, colour); ``endmembers``: the abundance bands' names, in band order."""
    import pystac
    from pystac.extensions.projection import ProjectionExtension

    geometry, bbox = None, None
    footprint = grid.footprint_wgs84()
    if footprint is not None:
        w, s, e, n = footprint
        bbox = [w, s, e, n]
        geometry = {"type": "Polygon",
                    "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    source = "acquisition" if when is not None else "file modification time"
    if when is None:
        stamp = properties.get("HSIMAP_SOURCE_MODIFIED")
        when = datetime.fromisoformat(stamp) if stamp else datetime.fromtimestamp(0, timezone.utc)
    props = {f"hsimap:{k.removeprefix('HSIMAP_').lower()}": v for k, v in properties.items()}
    props["hsimap:datetime_source"] = source
    item = pystac.Item(id=item_id, geometry=geometry, bbox=bbox, datetime=when,
                       properties=props)
    if grid.crs is not None and grid.has_transform:
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        proj.epsg = grid.crs.to_epsg()
        if proj.epsg is None:
            proj.wkt2 = grid.crs.to_wkt()
        proj.shape = [grid.height, grid.width]
        proj.transform = list(grid.transform)[:6]
    for key, file in assets.items():
        asset = pystac.Asset(href=f"./{file.name}",
                             media_type=COG if cog and file.suffix == ".tif"
                             else MEDIA.get(file.suffix), roles=ROLES.get(file.suffix))
        item.add_asset(key, asset)
        if classes is not None and key in ("classes", "probabilities"):
            from pystac.extensions.classification import Classification, ClassificationExtension

            ext = ClassificationExtension.ext(asset, add_if_missing=True)
            # The names as every other file writes them go in "title" and "description":
            # the extension's "name" is a machine name (letters, digits, - and _).
            ext.classes = [Classification.create(
                value=i, name=re.sub(r"[^0-9A-Za-z_-]+", "_", n).strip("_") or f"class_{i}",
                title=n, description=n, color_hint="{:02X}{:02X}{:02X}".format(*c))
                for i, n, c in zip(classes.ids, classes.names, classes.colors, strict=True)]
        if endmembers is not None and key == "abundances":
            asset.extra_fields["hsimap:endmembers"] = list(endmembers)
    item.set_self_href(None)
    path.write_text(json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False),
                               indent=2))
    return path
