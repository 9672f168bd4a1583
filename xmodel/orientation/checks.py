"""Argument checks shared by the orientation modules: float arrays, rotation matrices, directions.

Each check returns the value in the form the maths needs or raises a ValueError that names the
calling function and the argument, quotes what was given and says what is expected.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def as_float(x) -> jnp.ndarray:
    """``x`` as a JAX array of its own float dtype (integers -> default float)."""
    x = jnp.asarray(x)
    return x.astype(jnp.result_type(x, float))


def check_matrices(R, name: str, func: str) -> np.ndarray:
    """``R`` as a float64 numpy array of shape (..., 3, 3), or a ValueError naming ``name``."""
    R = np.asarray(R, dtype=np.float64)
    if R.ndim < 2 or R.shape[-2:] != (3, 3):
        raise ValueError(f"{func}: {name} must have shape (..., 3, 3) (rotation matrices), got "
                         f"shape {R.shape}; build one with rotation_matrix or base_orientation.")
    return R


def as_direction(value, name: str, func: str) -> np.ndarray:
    """A finite, non-zero 3-vector (crystal direction) as float64, or a ValueError naming ``name``."""
    try:
        d = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{func}: {name} must be a crystal direction [u, v, w] of 3 numbers, "
                         f"got {value!r}.") from None
    if d.shape != (3,) or not np.all(np.isfinite(d)):
        raise ValueError(f"{func}: {name} must be a crystal direction [u, v, w] of 3 finite "
                         f"numbers, got {value!r}; e.g. [0, 0, -1] for the [00-1] zone.")
    if not np.any(d):
        raise ValueError(f"{func}: {name} is the zero vector {value!r}, which has no "
                         f"direction; give a crystal direction such as [0, 0, -1] or [-1, 1, 0].")
    return d


def format_direction(v) -> str:
    """A direction as ``[1, 1, 0]`` for error messages."""
    return "[" + ", ".join(f"{float(x):g}" for x in np.ravel(v)) + "]"
