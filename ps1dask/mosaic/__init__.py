"""Mosaics: cutouts of any size (up to 1 degree) across skycell and projection-cell edges.

The geometry (:mod:`ps1dask.mosaic._core`, pure) gives the output grid of a position (its
projection cell's lattice), the skycells that cover the box and the owner of every output
pixel (PS1's unique-area rule). :mod:`ps1dask.mosaic.assemble` fetches the owned parts
through the ordinary fetch strategies and pastes (same projection cell: exact copies at
integer offsets) or reprojects them (other projection cells, with ``reproject``).
"""

from ps1dask.mosaic._core import (
    MAX_MOSAIC_SIZE,
    NO_SOURCE,
    MosaicGrid,
    MosaicSource,
    apply_homography,
    edge_depth,
    mosaic_grid,
    mosaic_sources,
    output_to_source,
    owned_box,
    ownership,
    source_box,
    tan_wcs,
    tangent_homography,
)

__all__ = [
    "MAX_MOSAIC_SIZE",
    "NO_SOURCE",
    "MosaicGrid",
    "MosaicSource",
    "apply_homography",
    "edge_depth",
    "mosaic_grid",
    "mosaic_sources",
    "output_to_source",
    "owned_box",
    "ownership",
    "source_box",
    "tan_wcs",
    "tangent_homography",
]
