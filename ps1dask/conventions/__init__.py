"""PS1 conventions as pure functions (no I/O): flux scaling, headers, cut rule, names, zero points.

Every fetch strategy calls these, so all of them agree to the bit. The emulator has its
own implementation of the service's rules (:mod:`ps1dask.emulator.service_rules`), an
independent witness the end-to-end tests hold these against.
"""

from ps1dask.conventions.cutrule import (
    MAX_CUTOUT_SIZE,
    CutoutBox,
    cut,
    cut_array,
    cut_into,
    cutout_box,
    cutout_origin,
    header_wcs,
    parse_size,
    position_pixel,
)
from ps1dask.conventions.filenames import (
    FILTERS,
    IMAGE_TYPES,
    STACK_TYPES,
    WARP_TYPES,
    ImageName,
    image_filename,
    parse_filename,
    parse_filters,
    parse_types,
    part_types,
)
from ps1dask.conventions.flux import (
    ASINH_A,
    asinh_encode_flux,
    disk_to_true,
    is_asinh_scaled,
    linear_pixels,
    linearize_stack_flux,
    quantize_to_disk,
    scaling_keywords,
)
from ps1dask.conventions.header import cutout_header, repair_header
from ps1dask.conventions.maskbits import DEFAULT_BAD_BITS, MaskBit, bad_pixels, mask_bit_names
from ps1dask.conventions.photometry import (
    abmag_to_flux,
    counts_to_microjansky,
    flux_to_abmag,
    header_zeropoint,
    mid_exposure_mjd_utc,
    stack_zeropoint,
    tai_to_utc_mjd,
    utc_to_tai_mjd,
    warp_zeropoint,
)

__all__ = [
    "ASINH_A",
    "DEFAULT_BAD_BITS",
    "FILTERS",
    "IMAGE_TYPES",
    "MAX_CUTOUT_SIZE",
    "STACK_TYPES",
    "WARP_TYPES",
    "CutoutBox",
    "ImageName",
    "MaskBit",
    "abmag_to_flux",
    "asinh_encode_flux",
    "bad_pixels",
    "counts_to_microjansky",
    "cut",
    "cut_array",
    "cut_into",
    "cutout_box",
    "cutout_header",
    "cutout_origin",
    "disk_to_true",
    "flux_to_abmag",
    "header_wcs",
    "header_zeropoint",
    "image_filename",
    "is_asinh_scaled",
    "linear_pixels",
    "linearize_stack_flux",
    "mask_bit_names",
    "mid_exposure_mjd_utc",
    "parse_filename",
    "parse_filters",
    "parse_size",
    "parse_types",
    "part_types",
    "position_pixel",
    "quantize_to_disk",
    "repair_header",
    "scaling_keywords",
    "stack_zeropoint",
    "tai_to_utc_mjd",
    "utc_to_tai_mjd",
    "warp_zeropoint",
]
