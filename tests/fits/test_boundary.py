"""Tests of fits/boundary.py helpers that need no refinement."""
import numpy as np
import pytest

from fits.boundary import _mean_orientation, line_points
from xmodel import orientation


def test_line_points_in_order():
    yy, xx = np.meshgrid(np.arange(5) * 0.25, np.arange(8) * 0.25, indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], 1)
    idx, dist = line_points(pos, (0.5, 0.0), (0.5, 1.75))
    np.testing.assert_array_equal(idx, 2 * 8 + np.arange(8))
    np.testing.assert_allclose(dist, np.arange(8) * 0.25)
    with pytest.raises(ValueError, match="are the same point"):
        line_points(pos, (0.5, 0.0), (0.5, 0.0))


def _rot(angle_deg: float, axis) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return Rotation.from_rotvec(np.radians(angle_deg) * axis).as_matrix()


def test_mean_orientation_of_different_rotations_under_symmetry():
    """+-1.5 deg about crystal e1 and +-0.8 deg about crystal (0, 1, 1): the chordal mean of
    R0 exp(+t K) and R0 exp(-t K) is R0 B with B symmetric positive definite, so the mean is R0
    exactly; the members are given as cubic copies R S, and none of them is R0."""
    R0 = _rot(37.0, (1.0, -2.0, 0.5))
    S = orientation.cubic_symmetry_operators()
    members = [R0 @ _rot(1.5, (1, 0, 0)), R0 @ _rot(-1.5, (1, 0, 0)),
               R0 @ _rot(0.8, (0, 1, 1)), R0 @ _rot(-0.8, (0, 1, 1))]
    copies = np.stack([m @ S[k] for m, k in zip(members, (0, 3, 7, 17))])
    m = _mean_orientation(copies)
    assert np.degrees(orientation.misorientation_angle(m, R0)) < 1e-6
    assert min(np.degrees(orientation.misorientation_angle(m, copies))) > 0.7      # not one of the members
    # the order does not matter: the mean is the same orientation whichever member comes first
    m2 = _mean_orientation(copies[::-1])
    assert np.degrees(orientation.misorientation_angle(m2, R0)) < 1e-6


def test_mean_orientation_of_unequal_rotations_about_one_axis():
    """Rotations by 0, 1 and 5 deg about one axis: the chordal mean is the rotation by
    atan2(mean sin, mean cos) about that axis (1.9997 deg), not the median (1 deg) or first."""
    R0 = _rot(20.0, (0.3, 0.1, 1.0))
    axis = np.array([2.0, -1.0, 1.0])
    angles = np.radians([0.0, 1.0, 5.0])
    S = orientation.cubic_symmetry_operators()
    copies = np.stack([_rot(np.degrees(t), axis) @ R0 @ S[k] for t, k in zip(angles, (5, 0, 11))])
    want = _rot(np.degrees(np.arctan2(np.mean(np.sin(angles)), np.mean(np.cos(angles)))), axis) @ R0
    m = _mean_orientation(copies)
    assert np.degrees(orientation.misorientation_angle(m, want)) < 1e-6
    assert abs(np.degrees(orientation.misorientation_angle(m, R0)) - 1.9997) < 1e-3


# --------------------------------------------------------------------------- rotation ramp

CHI = np.arange(180) * 2.0 - 179.0
Q = np.concatenate([np.geomspace(0.06, 0.24, 80), np.geomspace(1.72, 2.3, 24)])


def test_fit_line_follows_a_known_rotation_ramp():
    """Certified-fit style: a yellow domain tilted out of plane by 0 .. 6 deg along a line of 5
    points, plus a point without signal; fit_line's rotation is within 1 deg of the truth."""
    from fits.boundary import fit_line
    from fits.scan_fit import FitSettings, FitSetup
    from xmodel.config import default_paths, load_config
    from xmodel.noise import poisson_counts
    from xmodel.parameters import params_from_config

    settings = FitSettings(batch=1, max_iter=20, n_candidates=2, tol=2e-5)
    cfg = load_config(default_paths("yellow"))
    setup = FitSetup.build(cfg, Q, CHI, None, settings)
    p0 = params_from_config(cfg).replace(sl_scale=3000.0, diffuse_scale=45.0, al_scale=20.0, background=0.05)
    ramp = np.array([0.0, 0.0, 0.0, 3.0, 6.0])
    frames, truth = [], []
    for i, t in enumerate(ramp):
        p = p0.replace(tilt1=p0.tilt1 + np.radians(t))
        truth.append(np.asarray(p.sl_orientation(), float))
        img = np.full(CHI.size * Q.size, np.nan)
        img[setup.index] = poisson_counts(np.asarray(setup.model(p), float), seed=i)
        frames.append(img)
    empty = np.full(CHI.size * Q.size, np.nan)
    empty[setup.index] = poisson_counts(np.full(setup.index.size, 0.05), seed=9)
    frames.insert(3, empty)
    polar = np.stack(frames).reshape(len(frames), CHI.size, Q.size)
    r = fit_line(polar, setup, settings)
    assert r["status"][3] == 1                                    # no signal, skipped
    got = np.delete(r["rotation_deg"], 3)
    assert np.all(np.isfinite(got)), list(r["message"])
    bulk = truth[0]
    want = np.degrees([float(orientation.misorientation_angle(bulk, R)) for R in truth])
    np.testing.assert_allclose(got, want, atol=1.0, err_msg=str(list(r["message"])))
    mis = [float(np.degrees(orientation.misorientation_angle(R, F)))
           for R, F in zip(truth, np.delete(r["orientation_matrix"], 3, axis=0))]
    assert max(mis) < 0.5


def test_boundary_command_reads_points_as_x_y():
    from xmodel.commands.boundary import _point
    assert _point("7.0,2.5", "--from") == (2.5, 7.0)          # (y, x), the order of the positions
    with pytest.raises(ValueError, match="write it as X,Y in um"):
        _point("7.0", "--to")
