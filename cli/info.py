"""``hsimap info``: what a scene is, before anything is done with it."""

from __future__ import annotations

import json

import click

from hsimap.cli.options import json_opt, mask_opt, quiet_opt, scene_arg, variable_opt
from hsimap.io.scene import open_scene, scene_info


@click.command("info")
@scene_arg
@variable_opt
@mask_opt
@json_opt
@click.option("--indent", type=int, default=None, help="Indent the JSON output.")
@quiet_opt
def command(scene, variable, mask, as_json, indent, quiet) -> None:
    """Print size, bands, CRS, transform, wavelengths, nodata and bad bands of SCENE."""
    info = scene_info(open_scene(scene, variable=variable, mask=mask))
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=indent))
        return
    t = info.transform
    wl = (f"{info.wavelength_range[0]:.1f} - {info.wavelength_range[1]:.1f} nm"
          if info.wavelength_range else "none")
    lines = [
        f"File:         {info.path} ({info.driver})",
        f"Size:         {info.width} x {info.height} px, {info.bands} bands, {info.dtype}, "
        f"interleave {info.interleave}",
        f"CRS:          {info.crs or 'none (not georeferenced)'}",
        f"Transform:    a={t[0]:g} b={t[1]:g} c={t[2]:.6f} d={t[3]:g} e={t[4]:g} f={t[5]:.6f}",
        f"Pixel size:   {info.pixel_size[0]:g} x {info.pixel_size[1]:g}",
        f"Wavelengths:  {wl}",
        f"FWHM:         {'yes' if info.fwhm else 'none'}",
        f"Nodata:       {info.nodata if info.nodata is not None else 'none'}",
        f"Bad bands:    {len(info.bad_bands)}"
        + (f" ({', '.join(map(str, info.bad_bands[:12]))}"
           + (", ..." if len(info.bad_bands) > 12 else "") + ")" if info.bad_bands else ""),
        f"Scale:        x{info.scale_factor:g} + {info.add_offset:g}",
        f"Chunks:       {' x '.join(map(str, info.chunks))} (band, y, x)",
    ]
    if info.product:
        meta = info.metadata if info.metadata != "none" else \
            "none found (wavelengths unknown)"
        lines += [f"Product:      {info.product}",
                  f"Metadata:     {meta}",
                  f"Acquired:     {info.acquisition_time or 'unknown'}",
                  "Masked:       " + (f"{info.quality_masked_pixels:,} px flagged by "
                                      f"{', '.join(info.quality_layers)} (nodata in every "
                                      "output; --mask to choose)" if info.quality_layers
                                      else "nothing (--mask none)")]
        lines += [f"Grid:         {info.grid}"] if info.grid else []
        lines += [f"Bands from:   {info.bands_merged}"] if info.bands_merged else []
    click.echo("\n".join(lines))
