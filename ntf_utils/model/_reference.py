"""An independent NumPy reference of tiny-cuda-nn's multi-resolution hash-grid encoding.

Written point by point from tcnn's definition (``include/tiny-cuda-nn/encodings/grid.h``), with
no vectorisation tricks, so the PyTorch backend can be tested against it:

* level ``l`` has ``scale = 2**(l * log2(per_level_scale)) * base_resolution - 1`` and
  ``resolution = ceil(scale) + 1``;
* its table holds ``min(next_multiple_of_8(resolution**D), 2**log2_hashmap_size)`` entries;
* a point ``x`` in ``[0, 1]^D`` sits at ``pos = x * scale + 0.5`` (the half-cell offset), in the cell
  ``floor(pos)`` with fractional part ``pos - floor(pos)``;
* a corner's index is the dense row-major index ``sum(c_d * resolution**d)`` when
  ``resolution**D`` fits the table, else the coherent prime hash ``xor(c_d * prime_d)`` in uint32;
  either way modulo the level's table size;
* features of the ``2**D`` corners are blended with (bi/tri/quadri)linear weights;
* the output concatenates the levels, level-major.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["level_scale", "level_resolution", "level_table_size", "corner_index", "encode_reference"]

PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
_UINT32 = 0xFFFFFFFF


def level_scale(level: int, base_resolution: float, per_level_scale: float) -> float:
    """tcnn's ``grid_scale``: the (float32) scale of one level."""
    return float(
        np.float32(np.exp2(np.float32(level) * np.log2(np.float32(per_level_scale))) * np.float32(base_resolution))
        - np.float32(1.0)
    )


def level_resolution(scale: float) -> int:
    """tcnn's ``grid_resolution``: grid vertices per axis of one level."""
    return int(math.ceil(scale)) + 1


def level_table_size(resolution: int, n_dims: int, log2_hashmap_size: int) -> int:
    """Entries of one level's table: the dense grid rounded up to 8, capped at ``2**T``."""
    dense = resolution**n_dims
    dense = (dense + 7) // 8 * 8
    return min(dense, 2**log2_hashmap_size)


def corner_index(corner: tuple[int, ...], resolution: int, table_size: int) -> int:
    """Table row of one integer grid corner (tcnn's ``grid_index``)."""
    stride = 1
    index = 0
    for c in corner:
        if stride > table_size:
            break
        index = (index + c * stride) & _UINT32
        stride *= resolution
    if table_size < stride:
        index = 0
        for c, prime in zip(corner, PRIMES):
            index ^= (c * prime) & _UINT32
    return index % table_size


def encode_reference(
    x: np.ndarray,
    params: np.ndarray,
    *,
    n_levels: int,
    n_features_per_level: int,
    log2_hashmap_size: int,
    base_resolution: float,
    per_level_scale: float,
) -> np.ndarray:
    """Encode points with the hash grid, one point and one corner at a time.

    Parameters
    ----------
    x
        ``(n, D)`` points in ``[0, 1]^D``.
    params
        Flat parameter vector in tcnn's layout (level-major, then table row, then feature).

    Returns
    -------
    ``(n, n_levels * n_features_per_level)`` float64 encoding.
    """
    x = np.asarray(x, dtype=np.float32)
    n, dims = x.shape
    feats = n_features_per_level
    out = np.zeros((n, n_levels * feats))
    offset = 0
    for level in range(n_levels):
        scale = np.float32(level_scale(level, base_resolution, per_level_scale))
        resolution = level_resolution(float(scale))
        size = level_table_size(resolution, dims, log2_hashmap_size)
        table = params[offset * feats : (offset + size) * feats].reshape(size, feats)
        for i in range(n):
            pos = x[i] * scale + np.float32(0.5)
            cell = np.floor(pos)
            frac = pos - cell
            cell = cell.astype(np.int64)
            for bits in range(2**dims):
                weight = 1.0
                corner = []
                for d in range(dims):
                    if bits & (1 << d):
                        weight *= frac[d]
                        corner.append(int(cell[d]) + 1)
                    else:
                        weight *= 1.0 - frac[d]
                        corner.append(int(cell[d]))
                row = corner_index(tuple(corner), resolution, size)
                out[i, level * feats : (level + 1) * feats] += weight * table[row]
        offset += size
    return out
