"""Counter-based noise of the emulator: a splitmix64 hash of (key, X, Y) in uint64 numpy
arithmetic, so any pixel's value depends on its global coordinates only, never on the region
asked for."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

_IntArray = npt.NDArray[np.int64]
_FloatArray = npt.NDArray[np.float64]

# --------------------------------------------------------------------------------------
# counter-based noise
# --------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31, _S32 = (np.uint64(s) for s in (27, 30, 31, 32))
_COORD_OFFSET = 1 << 31


def hash_grid(key: int, X: _IntArray, Y: _IntArray) -> npt.NDArray[np.uint64]:
    """splitmix64 of every (X, Y) pair of the grid ``Y x X`` under a 64-bit ``key``."""
    xs = (np.asarray(X, dtype=np.int64) + _COORD_OFFSET).astype(np.uint64)
    ys = (np.asarray(Y, dtype=np.int64) + _COORD_OFFSET).astype(np.uint64)
    z = (ys[:, None] << _S32) | xs[None, :]
    z *= _GOLDEN
    z += np.uint64(key)
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def gauss_grid(key: int, X: _IntArray, Y: _IntArray) -> npt.NDArray[np.float32]:
    """A standard normal deviate per grid pixel (float32 Box-Muller on 2 x 24 hash bits)."""
    z = np.ascontiguousarray(hash_grid(key, X, Y))
    halves = z.view(np.uint32).reshape(z.shape + (2,))
    if np.little_endian:
        lo_w, hi_w = halves[..., 0], halves[..., 1]
    else:  # pragma: no cover
        hi_w, lo_w = halves[..., 0], halves[..., 1]
    u1 = (hi_w >> np.uint32(8)).astype(np.float32)
    u2 = (lo_w >> np.uint32(8)).astype(np.float32)
    u1 += np.float32(0.5)
    u1 *= np.float32(2.0**-24)
    u2 *= np.float32(2.0 * math.pi * 2.0**-24)
    np.log(u1, out=u1)
    u1 *= np.float32(-2.0)
    np.sqrt(u1, out=u1)
    np.cos(u2, out=u2)
    u1 *= u2
    return u1


def uniform_pairs(key: int, a: _IntArray, b: _IntArray) -> _FloatArray:
    """Uniform [0, 1) per (a, b) pair of the grid ``b x a``, from the same hash."""
    return (hash_grid(key, a, b) >> np.uint64(11)).astype(np.float64) * 2.0**-53


_MASK64 = (1 << 64) - 1


def uniform_pair(key: int, a: int, b: int) -> float:
    """:func:`uniform_pairs` of one pair, in Python integers (exactly the same value: the
    uint64 arithmetic wraps at 64 bits, and ``z >> 11`` converts to float exactly); for the
    few cells of a detector, where numpy's per-call cost dwarfs the arithmetic."""
    xs = (a + _COORD_OFFSET) & _MASK64
    ys = (b + _COORD_OFFSET) & _MASK64
    z = ((ys << 32) & _MASK64) | xs
    z = (z * 0x9E3779B97F4A7C15) & _MASK64
    z = (z + key) & _MASK64
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & _MASK64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z >> 11) * 2.0**-53
