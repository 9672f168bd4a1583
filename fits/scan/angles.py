"""Reported angles of a fitted SL orientation: zone axis, tilts and in-plane angle.

The fitted SL orientation ``R`` is written as ``R S = R_e1(tilt1) R_e2(tilt2) R_e3(inplane)
base_orientation(b, r)`` for the cubic symmetry operator ``S`` and zone ``b`` (from the configured
zone axes, `fits.scan.settings.SearchSettings.zones`) that put ``b`` closest to the beam;
``tilt_deg = hypot(tilt1, tilt2)``, which for small tilts is the angle between the zone axis and
the beam, and ``inplane_deg`` is the rotation about the beam, taken with the smallest magnitude
among the symmetric equivalents. This is the convention of the twin's truth.h5
(`xmodel.twin.point_truth`), so recovered and true values compare directly.
"""
from __future__ import annotations

import numpy as np

from xmodel import orientation

#: the keys `xmodel.orientation.decompose_orientation` returns, each a dataset of /entry/fits
ANGLE_KEYS = ("zone_axis", "tilt_deg", "tilt1_deg", "tilt2_deg", "inplane_deg")
#: the per-frame covariance (deg^2) of the lab rotation error, a dataset of /entry/fits
COVARIANCE_KEY = "orientation_covariance_deg2"


def rotation_jacobian(tilt1_deg, tilt2_deg) -> np.ndarray:
    """(N, 3, 3) lab rotation vector per unit change of (tilt1, tilt2, inplane) of
    ``R = R_e1(tilt1) R_e2(tilt2) R_e3(inplane) R_base``: the columns ``e1``, ``R_e1(t1) e2`` and
    ``R_e1(t1) R_e2(t2) e3``.

    Notes
    -----
    ``dR R^T = dt1 [e1]x + dt2 R1 [e2]x R1^T + dphi R1 R2 [e3]x R2^T R1^T`` and
    ``Q [v]x Q^T = [Q v]x`` for a rotation ``Q``, so the small rotation ``dR R^T`` has the
    rotation vector ``w = M (dt1, dt2, dphi)`` with ``M`` these columns (first order in the
    change, exact in the tilts). Errors of the three angles with covariance ``C`` give a lab
    rotation error of covariance ``M C M^T`` whose trace is the expected squared misorientation.
    """
    t1 = np.radians(np.atleast_1d(np.asarray(tilt1_deg, float)))
    t2 = np.radians(np.atleast_1d(np.asarray(tilt2_deg, float)))
    n = t1.size
    c1, s1, c2, s2 = np.cos(t1), np.sin(t1), np.cos(t2), np.sin(t2)
    m = np.zeros((n, 3, 3))
    m[:, 0, 0] = 1.0
    m[:, :, 1] = np.stack([np.zeros(n), c1, s1], axis=1)                 # R_e1(t1) e2
    m[:, :, 2] = np.stack([s2, -s1 * c2, c1 * c2], axis=1)               # R_e1(t1) R_e2(t2) e3
    return m


#: the fitted angles whose covariance gives the orientation uncertainty, in `rotation_jacobian` order
ORIENTATION_PARAMETERS = ("tilt1_deg", "tilt2_deg", "inplane_deg")


def orientation_stderr_deg(covariance_deg2: np.ndarray, tilt1_deg, tilt2_deg) -> np.ndarray:
    """(N,) one orientation uncertainty (deg): ``sqrt(trace(M C M^T))``, the root mean square
    misorientation between the fitted and the true orientation that the covariance implies.

    Parameters
    ----------
    covariance_deg2 : (N, 3, 3) covariance of (tilt1, tilt2, inplane) (deg^2).
    tilt1_deg, tilt2_deg : (N,) the tilts of the parametrisation (deg), for ``M``
        (`rotation_jacobian`).

    Notes
    -----
    For a small rotation error ``w`` (lab rotation vector, Gaussian with covariance
    ``M C M^T``), the misorientation angle is ``|w|`` and ``E|w|^2 = trace(M C M^T)``. NaN where
    the covariance is not finite.
    """
    lab = lab_rotation_covariance(covariance_deg2, tilt1_deg, tilt2_deg)
    tr = np.trace(lab, axis1=1, axis2=2)
    ok = np.isfinite(tr) & (tr >= 0)
    return np.where(ok, np.sqrt(np.where(ok, tr, 0.0)), np.nan)


def lab_rotation_covariance(covariance_deg2: np.ndarray, tilt1_deg, tilt2_deg) -> np.ndarray:
    """(N, 3, 3) covariance (deg^2) of the lab rotation vector of an orientation error, ``M C M^T``.

    Parameters
    ----------
    covariance_deg2 : (N, 3, 3) covariance of (tilt1, tilt2, inplane) (deg^2), the angles of
        the fit's own parametrisation.
    tilt1_deg, tilt2_deg : (N,) the tilts of that parametrisation (deg), for ``M``
        (`rotation_jacobian`).

    Notes
    -----
    First order: the error ``dR R^T`` has the rotation vector ``w = M (dt1, dt2, dphi)``
    (`rotation_jacobian`), so ``cov(w) = M C M^T``. NaN where the covariance is not finite.
    """
    c = np.asarray(covariance_deg2, float).reshape(-1, 3, 3)
    m = rotation_jacobian(tilt1_deg, tilt2_deg)
    out = m @ np.where(np.isfinite(c), c, 0.0) @ np.swapaxes(m, 1, 2)
    return np.where(np.all(np.isfinite(c), axis=(1, 2))[:, None, None], out, np.nan)


def angle_covariance(lab_covariance_deg2: np.ndarray, tilt1_deg, tilt2_deg) -> np.ndarray:
    """(N, 3, 3) covariance (deg^2) of (tilt1, tilt2, inplane) of a decomposition with these tilts,
    from the covariance of the lab rotation error: ``M^-1 S M^-T``; the inverse of
    `lab_rotation_covariance`.

    Parameters
    ----------
    lab_covariance_deg2 : (N, 3, 3) covariance of the lab rotation vector (deg^2).
    tilt1_deg, tilt2_deg : (N,) the tilts of the decomposition (deg), e.g. the reported ones
        (`xmodel.orientation.decompose_orientation`).

    Notes
    -----
    A fit refines the angles of its own parametrisation (tilts about its start, near 0), whose
    axes are the lab axes; the reported angles turn about ``e1``, ``R_e1(t1) e2`` and
    ``R_e1(t1) R_e2(t2) e3`` (`rotation_jacobian`). At a tilt of 8 deg the reported in-plane
    axis leans 8 deg from the beam and picks up ``sin 8 deg`` of a tilt error, which is often 10
    times the in-plane one: the errors of reported angles must be taken on their own axes.
    NaN where the covariance is not finite or ``M`` is singular (``|tilt2| = 90 deg``).
    """
    c = np.asarray(lab_covariance_deg2, float).reshape(-1, 3, 3)
    m = rotation_jacobian(tilt1_deg, tilt2_deg)
    good = np.all(np.isfinite(c), axis=(1, 2)) & (np.abs(np.linalg.det(m)) > 1e-9)
    minv = np.linalg.inv(np.where(good[:, None, None], m, np.eye(3)))
    out = minv @ np.where(good[:, None, None], c, 0.0) @ np.swapaxes(minv, 1, 2)
    return np.where(good[:, None, None], out, np.nan)


def report_angles(out: dict[str, np.ndarray], index: np.ndarray, zones) -> None:
    """Write the reported angles of frames ``index`` of the per-frame arrays ``out`` and the
    standard errors of tilt1, tilt2 and inplane on their own axes.

    Parameters
    ----------
    out : per-frame arrays (`fits.scan.results` layout) with ``orientation_matrix`` and, from the
        fit, `COVARIANCE_KEY` (the lab rotation covariance, `lab_rotation_covariance`).
    index : frames to report.
    zones : the configured zone axes (`fits.scan.settings.SearchSettings.zones`).

    Notes
    -----
    The angles are `xmodel.orientation.decompose_orientation`'s; their covariance is
    `angle_covariance` of the stored lab covariance at the reported tilts. Frames whose
    covariance is not finite keep the standard errors the fit wrote.
    """
    index = np.asarray(index, int)
    if index.size == 0:
        return
    ang = orientation.decompose_orientation(out["orientation_matrix"][index], list(zones))
    for k in ANGLE_KEYS:
        out[k][index] = ang[k]
    if COVARIANCE_KEY not in out:
        return
    c = angle_covariance(out[COVARIANCE_KEY][index], ang["tilt1_deg"], ang["tilt2_deg"])
    for j, k in enumerate(ORIENTATION_PARAMETERS):
        v = c[:, j, j]
        ok = np.isfinite(v) & (v >= 0)
        out[k + "_stderr"][index[ok]] = np.sqrt(v[ok])


def misorientation_vector(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """(N, 3) lab rotation vector (rad) from ``R_b`` to ``R_a`` under cubic symmetry.

    Parameters
    ----------
    R_a, R_b : (N, 3, 3) or (3, 3) SL crystal -> lab rotations (broadcast).

    Returns
    -------
    The rotation vector ``w`` of ``D = R_a (R_b S)^T`` for the cubic operator ``S`` of the
    smallest angle; ``|w|`` is `xmodel.orientation.misorientation_angle` and ``w / |w|`` the
    lab axis. NaN where either matrix is not finite.

    Notes
    -----
    ``D`` maps lab to lab, so a small lab rotation ``e`` of ``R_a`` (``R_a -> exp([e]x) R_a``)
    changes ``w`` by ``e`` to first order along the axis: ``d|w| = n . e`` with ``n = w / |w|``;
    one of ``R_b`` by ``-n . e`` (``D exp(-[e]x) = exp(-[D e]x) D`` and ``D^T n = n``).
    """
    R_a, R_b = np.broadcast_arrays(np.asarray(R_a, float).reshape(-1, 3, 3), np.asarray(R_b, float).reshape(-1, 3, 3))
    out = np.full(R_a.shape[:1] + (3,), np.nan)
    have = np.all(np.isfinite(R_a), axis=(1, 2)) & np.all(np.isfinite(R_b), axis=(1, 2))
    if not have.any():
        return out
    ops = orientation.cubic_symmetry_operators()
    d = np.einsum("nij,skj,nlk->nsil", R_a[have], ops, R_b[have])        # R_a (R_b S)^T
    tr = np.trace(d, axis1=2, axis2=3)
    best = d[np.arange(d.shape[0]), np.argmax(tr, axis=1)]
    out[have] = np.asarray(orientation.rotation_vector(best), float)
    return out
