"""Pictures of PS1 cutouts: grey and colour JPEG/PNG from linear pixels or a store.

Pure array renderers (:func:`grey`, :func:`composite`, :func:`lupton_rgb`,
:func:`fitscut_rgb`) follow the service's display conventions (asinh with percentile
autoscale, linear min/max, invert; colour from red/green/blue = y/i/g by default) through
:mod:`ps1dask.imaging`, the stretches of the service's ``fitscut.cgi``, so grey pictures
and ``method="fitscut"`` composites equal the service's pixel for pixel; the default
``method="lupton"`` composite keeps true colours. Store renderers (:func:`cutout_image`,
:func:`colour_image`, ``*_bytes``, ``*_pil``) read one position of a store opened with
:func:`ps1dask.open_store` (stacks, a warp ``epoch``, or for stores without stacks the
median of the good warps). Also: :func:`aperture_lightcurve` (a quick light curve from the
warp pixels), :mod:`ps1dask.render.bulk` (``ps1dask images``).

>>> import ps1dask
>>> from ps1dask import render
>>> ds = ps1dask.open_store("cutouts.zarr")                       # doctest: +SKIP
>>> png = render.cutout_bytes(ds, 0, "r", stretch="linear")      # doctest: +SKIP
>>> render.colour_pil(ds, 0).save("first.png")                    # y/i/g, Lupton-style  # doctest: +SKIP
>>> jpg = render.colour_bytes(ds, 0, "zrg", method="fitscut", fmt="jpg")  # doctest: +SKIP
"""

from ps1dask.render.display import (
    CHANNELS,
    COLOUR_METHODS,
    STRETCHES,
    Display,
    composite,
    default_colour_filters,
    display_of,
    encode,
    fitscut_rgb,
    grey,
    lupton_rgb,
    parse_colour_filters,
    sky_level,
    to_pil,
)
from ps1dask.render.lightcurve import aperture_lightcurve
from ps1dask.render.store import (
    CutoutInfo,
    colour_bytes,
    colour_image,
    colour_pil,
    cutout_bytes,
    cutout_image,
    cutout_pil,
    cutout_pixels,
    has_stacks,
    has_warps,
    position_table,
    status_codes,
    store_filters,
    warp_median,
)

__all__ = [
    "CHANNELS",
    "COLOUR_METHODS",
    "STRETCHES",
    "CutoutInfo",
    "Display",
    "aperture_lightcurve",
    "colour_bytes",
    "colour_image",
    "colour_pil",
    "composite",
    "cutout_bytes",
    "cutout_image",
    "cutout_pil",
    "cutout_pixels",
    "default_colour_filters",
    "display_of",
    "encode",
    "fitscut_rgb",
    "grey",
    "has_stacks",
    "has_warps",
    "lupton_rgb",
    "parse_colour_filters",
    "position_table",
    "sky_level",
    "status_codes",
    "store_filters",
    "to_pil",
    "warp_median",
]
