"""Rotations: matrices from rotation vectors, elementary rotations, rotation vectors and quaternions.

Contract (docs/conventions.md, "Crystal frames and orientation matrices"): matrices act on
column vectors, batches are ``(..., 3, 3)``. `rotation_matrix`, `rotation_about_axis` and
`matrix_from_quaternion` are pure JAX: jit-able, vmap-able and differentiable, with the dtype
of their inputs (Python numbers and integers become the default float). `rotation_vector`,
`quaternion_from_matrix` and `rotation_about_beam` are numpy, float64.

Quaternions are ``(w, x, y, z)`` (scalar first), Hamilton product, active rotation
``v -> q v q*``; the canonical one has ``w >= 0``.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation

from xmodel.orientation.checks import as_float, check_matrices
from xmodel.precision import EXACT

__all__ = ["matrix_from_quaternion", "quaternion_from_matrix", "rotation_about_axis", "rotation_about_beam",
           "rotation_matrix", "rotation_vector"]

#: below this squared angle (rad^2) `rotation_matrix` uses its Taylor series (error < 1e-16)
_TAYLOR_THETA2 = 1.0e-4


def _hat(w: jnp.ndarray) -> jnp.ndarray:
    """Skew matrix ``[w]_x`` with ``[w]_x v = w x v``; ``(..., 3) -> (..., 3, 3)``."""
    w1, w2, w3 = w[..., 0], w[..., 1], w[..., 2]
    zero = jnp.zeros_like(w1)
    return jnp.stack([jnp.stack([zero, -w3, w2], -1),
                      jnp.stack([w3, zero, -w1], -1),
                      jnp.stack([-w2, w1, zero], -1)], -2)


def rotation_matrix(rotvec) -> jnp.ndarray:
    """Rotation matrix of a rotation vector (Rodrigues' formula), pure JAX.

    Parameters
    ----------
    rotvec : array_like, shape (..., 3)
        Rotation vector ``w`` (rad), in the frame the matrix acts in: the rotation is by
        ``|w|`` about ``w / |w|``, right-handed.

    Returns
    -------
    jax.Array, shape (..., 3, 3)
        ``exp([w]_x)``, dtype of ``rotvec`` (integers -> default float).

    Notes
    -----
    ``R = I + A [w]_x + B [w]_x^2`` with ``A = sin(t)/t``, ``B = (1 - cos t)/t^2 =
    2 sin^2(t/2)/t^2``, ``t = |w|`` (Morawiec, *Orientations and Rotations*, 2004,
    doi:10.1007/978-3-662-09156-2). For ``t^2 < 1e-4`` A and B are their Taylor series
    to ``t^4`` and ``t`` is never evaluated at 0, so values and gradients are finite at
    ``w = 0`` (where ``dR/dw_i = [e_i]_x``).

    Validation: scipy.spatial.transform.Rotation.from_rotvec; jax.grad against central finite
    differences in float64, at 0 and elsewhere (tests/xmodel/test_orientation.py).
    """
    w = as_float(rotvec)
    if w.ndim == 0 or w.shape[-1] != 3:
        raise ValueError(f"rotation_matrix: rotvec must have shape (..., 3) (a rotation vector "
                         f"in rad), got shape {w.shape}; pass e.g. jnp.array([wx, wy, wz]).")
    theta2 = jnp.sum(w * w, axis=-1)
    small = theta2 < _TAYLOR_THETA2
    t2 = jnp.where(small, 1.0, theta2)
    t = jnp.sqrt(t2)
    a = jnp.where(small, 1.0 - theta2 / 6.0 + theta2 ** 2 / 120.0, jnp.sin(t) / t)
    b = jnp.where(small, 0.5 - theta2 / 24.0 + theta2 ** 2 / 720.0,
                  2.0 * jnp.sin(0.5 * t) ** 2 / t2)
    k = _hat(w)
    eye = jnp.eye(3, dtype=w.dtype)
    return eye + a[..., None, None] * k + b[..., None, None] * jnp.matmul(k, k, precision=EXACT)


def rotation_about_axis(axis: int, angle) -> jnp.ndarray:
    """Right-handed rotation by ``angle`` about lab axis e1, e2 or e3, pure JAX.

    Parameters
    ----------
    axis : int
        0, 1 or 2 for lab e1 (dim1, vertical), e2 (dim2, horizontal), e3 (beam).
    angle : array_like, shape (...)
        Rotation angle (rad), positive counter-clockwise looking down the axis.

    Returns
    -------
    jax.Array, shape (..., 3, 3)
        E.g. ``R_e3(a) = [[cos a, -sin a, 0], [sin a, cos a, 0], [0, 0, 1]]``.

    Notes
    -----
    Elementary rotation matrices (Morawiec 2004, doi:10.1007/978-3-662-09156-2).

    Validation: equals `rotation_matrix` of ``angle * e_axis`` (tests).
    """
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis not in (0, 1, 2):
        raise ValueError(f"rotation_about_axis: axis must be 0, 1 or 2 (lab e1, e2, e3), got "
                         f"{axis!r}; use 0 for tilt1, 1 for tilt2 and 2 for the in-plane angle.")
    a = as_float(angle)
    c, s = jnp.cos(a), jnp.sin(a)
    one, zero = jnp.ones_like(a), jnp.zeros_like(a)
    i, j = [(1, 2), (2, 0), (0, 1)][int(axis)]  # the rotated plane, e_i -> e_j
    rows = [[zero, zero, zero] for _ in range(3)]
    rows[int(axis)][int(axis)] = one
    rows[i][i], rows[i][j], rows[j][i], rows[j][j] = c, -s, s, c
    return jnp.stack([jnp.stack(r, -1) for r in rows], -2)


def rotation_vector(R) -> np.ndarray:
    """Rotation vector (rad) of rotation matrices; the inverse of `rotation_matrix` (numpy).

    Parameters
    ----------
    R : array_like, shape (..., 3, 3)
        Proper rotation matrices (any frame; the vector is in the same frame).

    Returns
    -------
    numpy.ndarray, shape (..., 3)
        ``w`` with ``|w|`` in [0, pi] and ``rotation_matrix(w) == R``.

    Notes
    -----
    Through the quaternion (Shepperd's method in scipy's ``Rotation.from_matrix``), which is
    accurate near 0 and near pi, unlike ``arccos((tr R - 1) / 2)``; Rowenhorst et al., Modelling
    Simul. Mater. Sci. Eng. 23, 083501 (2015), doi:10.1088/0965-0393/23/8/083501.

    Validation: round trip with `rotation_matrix` at 0, 1e-9, generic angles and pi - 1e-9.
    """
    R = check_matrices(R, "R", "rotation_vector")
    flat = R.reshape(-1, 3, 3)
    out = Rotation.from_matrix(flat).as_rotvec() if flat.shape[0] else np.zeros((0, 3))
    return out.reshape(R.shape[:-2] + (3,))


def quaternion_from_matrix(R) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` with ``w >= 0`` of rotation matrices (numpy).

    Parameters
    ----------
    R : array_like, shape (..., 3, 3)
        Proper rotation matrices.

    Returns
    -------
    numpy.ndarray, shape (..., 4)
        Scalar-first quaternion, Hamilton convention, active rotation.

    Notes
    -----
    Rowenhorst et al. 2015, doi:10.1088/0965-0393/23/8/083501 (with P = +1 and an active
    rotation), computed by scipy's ``Rotation.as_quat(canonical=True, scalar_first=True)``.

    Validation: round trip with `matrix_from_quaternion` (tests).
    """
    R = check_matrices(R, "R", "quaternion_from_matrix")
    flat = R.reshape(-1, 3, 3)
    if flat.shape[0] == 0:
        return np.zeros(R.shape[:-2] + (4,))
    q = Rotation.from_matrix(flat).as_quat(canonical=True, scalar_first=True)
    return q.reshape(R.shape[:-2] + (4,))


def matrix_from_quaternion(q) -> jnp.ndarray:
    """Rotation matrix of a quaternion ``(w, x, y, z)``, pure JAX (normalized first).

    Parameters
    ----------
    q : array_like, shape (..., 4)
        Scalar-first quaternion, any non-zero norm; ``q`` and ``-q`` give the same matrix.

    Returns
    -------
    jax.Array, shape (..., 3, 3)

    Notes
    -----
    ``R = (w^2 - |v|^2) I + 2 v v^T + 2 w [v]_x`` for the unit quaternion ``(w, v)``
    (Rowenhorst et al. 2015, doi:10.1088/0965-0393/23/8/083501, with P = +1).

    Validation: scipy ``Rotation.from_quat(..., scalar_first=True).as_matrix()`` (tests).
    """
    q = as_float(q)
    if q.ndim == 0 or q.shape[-1] != 4:
        raise ValueError(f"matrix_from_quaternion: q must have shape (..., 4) ordered (w, x, y, z),"
                         f" got shape {q.shape}.")
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    w, v = q[..., 0], q[..., 1:]
    eye = jnp.eye(3, dtype=q.dtype)
    return ((w ** 2 - jnp.sum(v * v, -1))[..., None, None] * eye
            + 2.0 * v[..., :, None] * v[..., None, :] + 2.0 * w[..., None, None] * _hat(v))


def rotation_about_beam(angle_deg) -> np.ndarray:
    """``R_e3(angle)``, the right-handed rotation about the beam, in numpy float64.

    Parameters
    ----------
    angle_deg : array_like, shape (...)
        Rotation angle about lab e3 (the beam), degrees, positive counter-clockwise looking
        down e3 (the in-plane angle of `sl_orientation`).

    Returns
    -------
    numpy.ndarray, shape (..., 3, 3), float64
        ``[[cos a, -sin a, 0], [sin a, cos a, 0], [0, 0, 1]]``.

    Notes
    -----
    The elementary rotation of `rotation_about_axis` with ``axis=2`` (Morawiec 2004,
    doi:10.1007/978-3-662-09156-2), for numpy code that turns many template orientations at
    once without JAX dispatch (the orientation search).

    Validation: equals `rotation_about_axis` ``(2, radians(angle_deg))`` to 1e-15 at angles
    across (-180, 180] deg (tests/xmodel/test_orientation.py).
    """
    p = np.radians(np.asarray(angle_deg, float))
    c, s, z, o = np.cos(p), np.sin(p), np.zeros(p.shape), np.ones(p.shape)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)
