"""Data shipped with hsimap: the embedded USGS spectral library (:mod:`hsimap.data.usgs`)."""
