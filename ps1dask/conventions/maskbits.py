"""PS1 16-bit mask bits of ``.mask`` images."""

from __future__ import annotations

import enum

import numpy as np
import numpy.typing as npt


class MaskBit(enum.IntFlag):
    """Bits of PS1 mask images (0 means a good pixel)."""

    FLAT = 0x2
    DARK = 0x4
    BLANK = 0x8
    CTE = 0x10
    SAT = 0x20
    LOW = 0x40
    SUSPECT = 0x80  # also called BURNTOOL
    CR = 0x100
    SPIKE = 0x200
    GHOST = 0x400
    STREAK = 0x800
    STARCORE = 0x1000
    CONV_BAD = 0x2000
    CONV_POOR = 0x4000


#: Bits that make a pixel unusable for photometry by default.
DEFAULT_BAD_BITS = (
    MaskBit.FLAT
    | MaskBit.DARK
    | MaskBit.BLANK
    | MaskBit.SAT
    | MaskBit.LOW
    | MaskBit.CR
    | MaskBit.CONV_BAD
)


def mask_bit_names(value: int) -> list[str]:
    """Names of the bits set in a mask value, e.g. ``0x28`` -> ``['BLANK', 'SAT']``."""
    return [bit.name for bit in MaskBit if bit.name is not None and value & bit.value]


def bad_pixels(mask: npt.ArrayLike, bits: int = DEFAULT_BAD_BITS) -> npt.NDArray[np.bool_]:
    """True where any of ``bits`` is set (mask as stored, any integer dtype)."""
    return (np.asarray(mask).astype(np.int64) & int(bits)) != 0
