"""Reading scenes and labels, writing GIS-ready rasters and spectral libraries."""

from hsimap.io.scene import SceneInfo, open_scene, read_window, scene_info
from hsimap.io.speclib import read_library, write_library
from hsimap.io.writers import ClassTable, Grid, RasterSink, write_raster

__all__ = [
    "ClassTable",
    "Grid",
    "RasterSink",
    "SceneInfo",
    "open_scene",
    "read_library",
    "read_window",
    "scene_info",
    "write_library",
    "write_raster",
]
