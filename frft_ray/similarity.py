"""Input checks and row normalisation for FRFT filtering and the embedding cache (numpy, no torch).

`normalise_rows` is the one row normaliser of the package (the embedding cache uses it too);
`unit_rows` is the same after validating its input (2-D, finite). The similarity maths itself is in
`frft_ray.pool_scan` (torch, on the embedder's device); this module stays free of torch so the
config's strategy check can import the registry cheaply and without an import cycle.
"""

from __future__ import annotations

import numpy as np


class FilterError(ValueError):
    """Filtering cannot run on these inputs (empty pool, no generations, mismatched shapes)."""


def normalise_rows(a: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (all-zero rows stay zero); no input checks."""
    a = np.asarray(a, dtype=np.float32)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def unit_rows(a: np.ndarray, what: str) -> np.ndarray:
    """`a` as L2-normalised float32 rows; a FilterError naming `what` if it is not 2-D or not finite."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise FilterError(f"{what} must be a 2-D array [rows, dim], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise FilterError(f"{what} contains NaN or infinite values")
    return normalise_rows(a)
