"""Reading scenes and labels, writing GIS-ready rasters and spectral libraries."""

from hsimap.classes import ClassTable
from hsimap.io.rasters import Grid, RasterSink, write_raster
from hsimap.io.scene import SceneInfo, open_scene, read_window, scene_info
from hsimap.io.speclib import read_library, write_library

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
