"""Input checks shared by the public API: each error names the problem and the fix."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

__all__ = [
    "check_finite_values",
    "check_nonnegative_counts",
    "looks_like_raw_counts",
    "check_numeric_matrix",
    "check_coords",
    "check_positive_int",
    "check_number",
    "check_box",
]


def check_finite_values(matrix, what: str) -> None:
    """Raise when a (dense or sparse) matrix holds NaN or inf."""
    data = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if data.dtype.kind in "fc" and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise ValueError(f"{what} contains {bad} NaN/inf values; remove or impute them (e.g. np.nan_to_num) before fitting")


def check_nonnegative_counts(matrix, what: str) -> None:
    """Raise when count data holds negative values."""
    data = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if data.size and data.min() < 0:
        raise ValueError(
            f"{what} has negative values (min {data.min():.3g}) but a count loss (poisson/nb) needs raw "
            "non-negative counts; pass the raw counts layer, or use loss='mse' for normalised values"
        )
    sample = data.ravel()[:1_000_000]
    fractional = sample != np.round(sample) if sample.dtype.kind in "fc" else np.zeros(0, bool)
    if fractional.any():
        example = float(sample[np.argmax(fractional)])
        warnings.warn(
            f"{what} is given to a count loss (poisson/nb) but {int(fractional.sum())} of {sample.size} values "
            f"are not whole numbers (e.g. {example:.3g}): it looks normalised, not raw counts. Pass the raw counts "
            "(e.g. layer='counts'), or use loss='mse' for normalised values",
            UserWarning, stacklevel=4)


def looks_like_raw_counts(matrix, max_entries: int = 1_000_000) -> bool:
    """True when the values are non-negative integers reaching at least 10 (up to ``max_entries`` checked)."""
    data = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    data = data.ravel()[:max_entries]
    if not data.size or not np.issubdtype(data.dtype, np.number):
        return False
    return bool(data.min() >= 0 and data.max() >= 10 and np.all(data == np.round(data)))


def check_numeric_matrix(matrix, what: str) -> None:
    """Raise when a matrix holds strings or other non-numbers (an id or label column read as values)."""
    dtype = getattr(matrix, "dtype", None)
    if dtype is not None and (dtype.kind in "OSUV" or not (np.issubdtype(dtype, np.number) or dtype.kind == "b")):
        raise TypeError(
            f"{what} holds {dtype} values, not numbers; expression values must be numeric. Convert them "
            f"(e.g. adata.X = adata.X.astype('float32')), or check that no id or metadata column was read as a "
            "gene (pp.read_sections(..., metadata=[...]) keeps such columns in obs)"
        )


def check_coords(coords, what: str, n_cols: int | tuple[int, ...] = (3, 4)) -> np.ndarray:
    """Validate an ``(n, d)`` coordinate array; returns it as float64."""
    allowed = (n_cols,) if isinstance(n_cols, int) else tuple(n_cols)
    try:
        coords = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError) as err:  # strings, None rows, ragged lists
        raise ValueError(
            f"{what} must be a numeric (n, {' or '.join(map(str, allowed))}) array; it cannot be read as numbers ({err})"
        ) from err
    if coords.ndim == 1 and coords.shape[0] in allowed:
        coords = coords[None, :]
    if coords.ndim != 2 or coords.shape[1] not in allowed:
        hint = ""
        if coords.ndim == 2 and coords.shape[1] == 2:
            hint = " It has 2 columns (x, y): add z (stack sections with ntf_utils.pp.stack_sections(..., z=...))."
        raise ValueError(f"{what} must have shape (n, {' or '.join(map(str, allowed))}), got {coords.shape}.{hint}")
    if not np.isfinite(coords).all():
        bad = int((~np.isfinite(coords)).any(1).sum())
        raise ValueError(f"{what} has NaN/inf in {bad} rows; drop those cells (adata[mask].copy()) or fix the coordinates")
    return coords


def check_positive_int(value, what: str) -> int:
    """``value`` as an int >= 1 (e.g. a batch size), else a ``ValueError`` naming ``what``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def check_number(value, what: str) -> float:
    """``value`` as a finite float, else a ``ValueError`` naming ``what``."""
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be a finite number, got {value!r}") from err
    if isinstance(value, (bool, np.bool_)) or not np.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


def check_box(bounds, what: str, n_axes: int) -> np.ndarray:
    """An ``(n_axes, 2)`` box of finite ``(min, max)`` rows with ``min <= max``, as float64."""
    try:
        box = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be {n_axes} numeric (min, max) pairs, got {bounds!r}") from err
    if box.shape != (n_axes, 2):
        raise ValueError(f"{what} must be {n_axes} (min, max) pairs, shape ({n_axes}, 2), got shape {box.shape}")
    if not np.isfinite(box).all():
        raise ValueError(f"{what} has NaN/inf values: {box.tolist()}; pass finite (min, max) pairs")
    if (box[:, 0] > box[:, 1]).any():
        raise ValueError(f"{what} has min > max on axis {int(np.argmax(box[:, 0] > box[:, 1]))}: {box.tolist()}; "
                         "pass (min, max) in increasing order")
    return box
