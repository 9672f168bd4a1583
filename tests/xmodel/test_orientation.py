"""Tests of xmodel.orientation: rotations, zone-axis frames, orientation relationships,
cubic misorientation and the fundamental-zone grid (float64 throughout, see conftest)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from xmodel import orientation as ori

RNG = np.random.default_rng(20240611)
E = np.eye(3)


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _angle_deg(u, v):
    u, v = _unit(u), _unit(v)
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(u, v)), np.dot(u, v)))


def _central_jacobian(f, x, eps=1e-6):
    """d f / d x by central differences for f: (..., n) -> (..., out) batched over the leading
    axes of x (one call of f); result (..., out, n)."""
    x = np.asarray(x, float)
    n = x.shape[-1]
    step = eps * np.eye(n)
    shifted = np.stack([x[..., None, :] + step, x[..., None, :] - step])  # (2, ..., n, n)
    y = np.asarray(f(jnp.asarray(shifted)))
    d = (y[0] - y[1]) / (2 * eps)  # (..., n, out...)
    return np.moveaxis(d, x.ndim - 1, -1)


# --- rotation primitives --------------------------------------------------------------------

def test_rotation_matrix_matches_scipy_and_is_proper():
    w = np.concatenate([RNG.normal(size=(20, 3)), [[0, 0, 0], [1e-9, 0, 0], [0, 5e-3, 5e-3],
                                                   [0, 0, np.pi - 1e-9]]])
    R = np.asarray(ori.rotation_matrix(jnp.asarray(w)))
    np.testing.assert_allclose(R, Rotation.from_rotvec(w).as_matrix(), atol=1e-14)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(E, R.shape), atol=1e-14)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-14)


def test_rotation_matrix_dtype_follows_input_and_jits():
    assert jax.eval_shape(ori.rotation_matrix, jnp.ones(3, jnp.float32)).dtype == jnp.float32
    assert jax.eval_shape(ori.rotation_matrix, np.array([0, 0, 1])).dtype == jnp.float64
    w = RNG.normal(size=(4, 3))
    np.testing.assert_allclose(jax.jit(jax.vmap(ori.rotation_matrix))(w), ori.rotation_matrix(w),
                               atol=1e-15)
    with pytest.raises(ValueError, match=r"rotvec must have shape \(\.\.\., 3\).*got shape \(4,\)"):
        ori.rotation_matrix(jnp.zeros(4))


def test_rotation_matrix_gradient_matches_finite_differences():
    # at 0, on both sides of the Taylor switch (|w|^2 = 1e-4), small and generic
    w0 = np.array([[0.0, 0.0, 0.0], [1e-3, -2e-3, 4e-3], [0.0, 0.0, 0.01 - 1e-9],
                   [0.0, 0.0, 0.01 + 1e-9], [0.7, -0.2, 1.3]])
    jac = np.asarray(jax.jit(jax.vmap(jax.jacfwd(ori.rotation_matrix)))(w0))
    jac_rev = np.asarray(jax.jit(jax.vmap(jax.jacrev(ori.rotation_matrix)))(w0))
    fd = _central_jacobian(jax.jit(ori.rotation_matrix), w0)
    assert np.all(np.isfinite(jac))
    np.testing.assert_allclose(jac, fd, atol=1e-9)
    np.testing.assert_allclose(jac_rev, jac, atol=1e-14)
    # d exp([w]_x) / dw_i = [e_i]_x at 0
    hat = np.stack([np.cross(E[i], E).T for i in range(3)], axis=-1)
    np.testing.assert_allclose(jac[0], hat, atol=1e-15)


def test_rotation_about_axis_is_right_handed():
    angles = np.array([0.3, -1.1])
    for axis in range(3):
        R = ori.rotation_about_axis(axis, angles)
        np.testing.assert_allclose(R, ori.rotation_matrix(angles[:, None] * E[axis]), atol=1e-15)
    # right-handed: e1 -> e2 under +90 deg about e3
    np.testing.assert_allclose(ori.rotation_about_axis(2, np.pi / 2) @ E[0], E[1], atol=1e-15)
    with pytest.raises(ValueError, match=r"axis must be 0, 1 or 2.*got 3"):
        ori.rotation_about_axis(3, 0.1)


def test_rotation_vector_inverts_rotation_matrix_near_zero_and_pi():
    w = np.array([[0, 0, 0], [1e-10, 0, 0], [0.3, -0.4, 1.2], [0, 0, np.pi - 1e-8],
                  _unit([1, 2, 3]) * (np.pi - 1e-7)])
    back = ori.rotation_vector(ori.rotation_matrix(w))
    np.testing.assert_allclose(back, w, atol=1e-7)
    np.testing.assert_allclose(back[:3], w[:3], atol=1e-14)
    assert ori.rotation_vector(np.broadcast_to(E, (2, 5, 3, 3))).shape == (2, 5, 3)
    with pytest.raises(ValueError, match=r"R must have shape \(\.\.\., 3, 3\).*got shape \(3,\)"):
        ori.rotation_vector(np.zeros(3))


def test_quaternion_round_trip_and_scipy_convention():
    R = Rotation.random(10, rng=3).as_matrix()
    q = ori.quaternion_from_matrix(R)
    assert np.all(q[:, 0] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-15)
    np.testing.assert_allclose(ori.matrix_from_quaternion(q), R, atol=1e-14)
    np.testing.assert_allclose(ori.matrix_from_quaternion(-2.0 * q), R, atol=1e-14)
    np.testing.assert_allclose(
        ori.matrix_from_quaternion(q), Rotation.from_quat(q, scalar_first=True).as_matrix(),
        atol=1e-14)
    with pytest.raises(ValueError, match=r"q must have shape \(\.\.\., 4\).*\(w, x, y, z\)"):
        ori.matrix_from_quaternion(jnp.ones(3))


# --- zone-axis frame and SL orientation -------------------------------------------------------

@pytest.mark.parametrize("beam, expected_horizontal", [
    ([0, 0, -1], [1, 0, 0]), ([-1, 1, 0], [0, 0, 1]), ([3, 0, -1], [0, 1, 0]),
    ([1, 1, 2], [5, -1, -2])])
def test_base_orientation_default_reference(beam, expected_horizontal):
    R = ori.base_orientation(beam)
    np.testing.assert_allclose(R @ R.T, E, atol=1e-15)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(R @ _unit(beam), E[2], atol=1e-15)
    np.testing.assert_allclose(R @ _unit(expected_horizontal), E[1], atol=1e-15)


@pytest.mark.parametrize("beam", [[0, 0, -1], [-1, 1, 0], [3, 0, -1], [1, 1, 2]])
@pytest.mark.parametrize("reference", [[0, 1, 0], [1, 2, 3.5]])
def test_base_orientation_given_reference(beam, reference):
    R = ori.base_orientation(beam, reference)
    b, r = _unit(beam), np.asarray(reference, float)
    r_perp = _unit(r - np.dot(r, b) * b)
    np.testing.assert_allclose(R @ b, E[2], atol=1e-15)
    np.testing.assert_allclose(R @ r_perp, E[1], atol=1e-15)
    np.testing.assert_allclose(R @ R.T, E, atol=1e-15)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-14)


def test_base_orientation_errors():
    with pytest.raises(ValueError, match=r"reference \[1, -1, 0\] is parallel to beam_direction "
                                         r"\[-1, 1, 0\].*not parallel"):
        ori.base_orientation([-1, 1, 0], [1, -1, 0])
    with pytest.raises(ValueError, match=r"beam_direction is the zero vector"):
        ori.base_orientation([0, 0, 0])
    with pytest.raises(ValueError, match=r"beam_direction must be a crystal direction \[u, v, w\] "
                                         r"of 3 finite numbers, got \[0, 1\]"):
        ori.base_orientation([0, 1])
    with pytest.raises(ValueError, match=r"reference must be a crystal direction.*got 'x'"):
        ori.base_orientation([0, 0, 1], "x")


def test_sl_orientation_composition_and_gradient():
    R_base = ori.base_orientation([-1, 1, 0])
    inplane, tilt1, tilt2 = 0.4, -0.05, 0.02
    expected = (Rotation.from_rotvec([tilt1, 0, 0]) * Rotation.from_rotvec([0, tilt2, 0])
                * Rotation.from_rotvec([0, 0, inplane])).as_matrix() @ R_base
    R = jax.jit(ori.sl_orientation)(R_base, inplane, tilt1, tilt2)
    np.testing.assert_allclose(R, expected, atol=1e-15)
    assert R.dtype == jnp.float64
    f32 = jax.ShapeDtypeStruct((), jnp.float32)
    assert jax.eval_shape(ori.sl_orientation, R_base, f32, f32, f32).dtype == jnp.float32
    batch = ori.sl_orientation(R_base, jnp.array([0.0, 0.1, 0.2]), 0.0, 0.0)
    assert batch.shape == (3, 3, 3)

    @jax.jit
    def g(x):
        R = ori.sl_orientation(R_base, x[..., 0], x[..., 1], x[..., 2])
        return R @ jnp.array([0.3, -0.2, 0.9])

    x0 = np.array([inplane, tilt1, tilt2])
    np.testing.assert_allclose(jax.jit(jax.jacfwd(g))(x0), _central_jacobian(g, x0), atol=1e-9)


# --- orientation relationships ----------------------------------------------------------------

def _directions(family):
    """All signed permutations of ``family`` (e.g. <110>: 12 directions), as unit vectors."""
    out = {tuple(s * p for s, p in zip(signs, perm))
           for perm in itertools.permutations(family)
           for signs in itertools.product((1, -1), repeat=3)}
    return np.array([_unit(d) for d in sorted(out)])


def test_conf1_directions_and_facet_contacts():
    R_or = ori.orientation_relationship("conf1")
    np.testing.assert_allclose(R_or @ E[0], _unit([1, 1, 0]), atol=1e-15)
    np.testing.assert_allclose(R_or @ E[2], E[2], atol=1e-15)
    nn_sl = _directions((1, 1, 0))
    assert len(nn_sl) == 12
    in_al = nn_sl @ R_or  # rows: R_or^T d, the 12 <110>SL in AL coordinates
    to_100 = np.degrees(np.arccos(np.clip(np.abs(in_al @ _directions((1, 0, 0)).T).max(1), -1, 1)))
    to_111 = np.degrees(np.arccos(np.clip(np.abs(in_al @ _directions((1, 1, 1)).T).max(1), -1, 1)))
    along_100 = to_100 < 1e-5
    assert along_100.sum() == 4  # 4 {100}-{100} contacts
    assert np.all(to_111[~along_100] < 10.0)  # 8 {111}-{111} contacts (9.74 deg off)
    np.testing.assert_allclose(to_111[~along_100], np.degrees(np.arccos((1 + 1 / np.sqrt(2))
                                                                        / np.sqrt(3))), atol=1e-9)


def test_conf2_is_conf1_turned_45_deg_about_100_al():
    R1 = ori.orientation_relationship("conf1")
    R2 = ori.orientation_relationship("Conf2")
    np.testing.assert_allclose(R2, R1 @ Rotation.from_rotvec([np.pi / 4, 0, 0]).as_matrix(),
                               atol=1e-15)
    np.testing.assert_allclose(R2 @ E[0], _unit([1, 1, 0]), atol=1e-15)
    np.testing.assert_allclose(R2 @ _unit([0, 1, 1]), E[2], atol=1e-15)
    np.testing.assert_allclose(np.linalg.det(R2), 1.0, atol=1e-14)


def test_custom_relationship():
    pairs = (([1, 1, 0], [1, 0, 0]), ([0, 0, 1], [0, 0, 1]))
    np.testing.assert_allclose(ori.orientation_relationship("custom", pairs),
                               ori.orientation_relationship("conf1"), atol=1e-15)
    # second pair 0.5 deg off: first pair exact, second as close as possible
    off = [np.sin(np.radians(0.5)), 0, np.cos(np.radians(0.5))]  # 89.5 deg from [100]
    R = ori.orientation_relationship("custom", (([1, 0, 0], [1, 0, 0]), ([0, 0, 1], off)))
    np.testing.assert_allclose(R @ E[0], E[0], atol=1e-15)
    assert _angle_deg(R @ off, E[2]) == pytest.approx(0.5, abs=1e-9)
    np.testing.assert_allclose(np.cross(R @ off, E[2]) @ E[0], 0.0, atol=1e-15)  # in-plane


def test_relationship_errors():
    with pytest.raises(ValueError, match=r"unknown orientation relationship 'conf3'; valid names "
                                         r"are 'conf1', 'conf2' and 'custom'"):
        ori.orientation_relationship("conf3")
    with pytest.raises(ValueError, match=r"SL directions \[1, 1, 0\] and \[0, 0, 1\] are 90\.00 "
                                         r"deg apart but the AL directions \[1, 0, 0\] and "
                                         r"\[1, 1, 0\] are "
                                         r"45\.00 deg apart"):
        ori.orientation_relationship("custom", (([1, 1, 0], [1, 0, 0]), ([0, 0, 1], [1, 1, 0])))
    with pytest.raises(ValueError, match=r"name 'custom' needs pairs="):
        ori.orientation_relationship("custom")
    with pytest.raises(ValueError, match=r"pairs are only used with name 'custom'"):
        ori.orientation_relationship("conf1", (([1, 1, 0], [1, 0, 0]), ([0, 0, 1], [0, 0, 1])))
    with pytest.raises(ValueError, match=r"pairs must be \(\(sl_dir1, al_dir1\), \(sl_dir2, "
                                         r"al_dir2\)\) with 3-vectors"):
        ori.orientation_relationship("custom", ([1, 1, 0], [1, 0, 0]))
    with pytest.raises(ValueError, match=r"the two AL directions .* are parallel"):
        ori.orientation_relationship("custom", (([1, 0, 0], [1, 0, 0]), ([0, 0, 1], [2, 0, 0])))
    with pytest.raises(ValueError, match=r"al_dir2 is the zero vector"):
        ori.orientation_relationship("custom", (([1, 0, 0], [1, 0, 0]), ([0, 0, 1], [0, 0, 0])))


def test_al_orientation():
    R_sl = ori.sl_orientation(ori.base_orientation([0, 0, -1]), 0.3, 0.01, -0.02)
    R_or = ori.orientation_relationship("conf2")
    np.testing.assert_allclose(ori.al_orientation(R_sl, R_or, jnp.zeros(3)), R_sl @ R_or,
                               atol=1e-15)
    w = np.array([0.01, -0.03, 0.02])
    np.testing.assert_allclose(jax.jit(ori.al_orientation)(R_sl, R_or, w),
                               R_sl @ R_or @ Rotation.from_rotvec(w).as_matrix(), atol=1e-15)

    @jax.jit
    def g(x):
        return ori.al_orientation(R_sl, R_or, x) @ jnp.array([2.0, 0.0, 0.0])

    x0 = np.stack([np.zeros(3), w])
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.jacrev(g)))(x0), _central_jacobian(g, x0),
                               atol=1e-9)


# --- cubic symmetry and misorientation --------------------------------------------------------

def test_cubic_symmetry_operators_form_the_group_432():
    ops = ori.cubic_symmetry_operators()
    assert ops.shape == (24, 3, 3)
    np.testing.assert_array_equal(ops[0], E)
    np.testing.assert_allclose(np.linalg.det(ops), 1.0)
    keys = {tuple(m.ravel()) for m in ops}
    assert len(keys) == 24
    assert all(tuple((a @ b).ravel()) in keys for a in ops for b in ops)


def test_misorientation_angle_known_values_and_symmetry():
    def about_001(deg):
        return Rotation.from_rotvec([0, 0, np.radians(deg)]).as_matrix()

    R = Rotation.random(5, rng=7).as_matrix()
    for deg, expected in [(10, 10), (50, 40), (90, 0), (0, 0)]:
        np.testing.assert_allclose(np.degrees(ori.misorientation_angle(R, R @ about_001(deg))),
                                   expected, atol=1e-9)
    R_b = Rotation.random(5, rng=8).as_matrix()
    ab, ba = ori.misorientation_angle(R, R_b), ori.misorientation_angle(R_b, R)
    np.testing.assert_allclose(ab, ba, atol=1e-12)
    # invariance under the crystal symmetry of either argument
    ops = ori.cubic_symmetry_operators()
    np.testing.assert_allclose(ori.misorientation_angle(R[:, None], R[:, None] @ ops), 0.0,
                               atol=1e-12)
    # accurate for tiny angles (atan2, not arccos of the trace)
    tiny = Rotation.from_rotvec([1e-7, -2e-7, 0]).as_matrix()
    np.testing.assert_allclose(ori.misorientation_angle(R, R @ tiny), np.sqrt(5) * 1e-7,
                               rtol=1e-7)
    np.testing.assert_allclose(ori.misorientation_angle(R @ ops[5], R_b @ ops[17]), ab, atol=1e-12)
    # brute force over both sides with scipy
    M = np.swapaxes(R, -1, -2) @ R_b
    brute = [Rotation.from_matrix((ops[:, None] @ M[n] @ ops[None]).reshape(-1, 3, 3))
             .magnitude().min() for n in range(5)]
    np.testing.assert_allclose(ab, brute, atol=1e-12)
    # Mackenzie: no cubic disorientation exceeds 62.8 deg; broadcasting
    many = ori.misorientation_angle(R[:, None], Rotation.random(200, rng=9).as_matrix()[None])
    assert many.shape == (5, 200)
    assert np.degrees(many.max()) < 62.8 + 1e-9
    with pytest.raises(ValueError, match=r"R_b must have shape \(\.\.\., 3, 3\)"):
        ori.misorientation_angle(E, np.ones((3, 4)))


def test_disorientation_angle_and_axis():
    R_a = Rotation.random(rng=11).as_matrix()
    axis = _unit([1, 1, 1])
    R_b = R_a @ Rotation.from_rotvec(np.radians(10) * axis).as_matrix() @ \
        ori.cubic_symmetry_operators()[9]
    angle, found = ori.disorientation(R_a, R_b)
    assert np.degrees(angle) == pytest.approx(10.0, abs=1e-9)
    np.testing.assert_allclose(found, axis, atol=1e-9)
    angle0, axis0 = ori.disorientation(R_a, R_a)
    assert angle0 == pytest.approx(0.0, abs=1e-7)
    assert np.all(np.isfinite(axis0))


# --- fundamental-zone grid --------------------------------------------------------------------

def test_fundamental_zone_grid_covers_so3():
    step = 10.0
    grid = ori.fundamental_zone_grid(step)
    assert grid.ndim == 3 and grid.shape[1:] == (3, 3) and 500 < len(grid) < 2000
    np.testing.assert_allclose(grid @ np.swapaxes(grid, -1, -2),
                               np.broadcast_to(E, grid.shape), atol=1e-12)
    # every grid point is its own fundamental-zone representative
    own = np.linalg.norm(ori.rotation_vector(grid), axis=-1)
    np.testing.assert_allclose(ori.misorientation_angle(E, grid), own, atol=1e-9)
    # 200 random orientations all lie within sqrt(3)/2 step of a grid point
    samples = Rotation.random(200, rng=12).as_matrix()
    nearest = np.array([ori.misorientation_angle(s, grid).min() for s in samples])
    assert np.degrees(nearest.max()) <= np.sqrt(3) / 2 * step + 1e-9
    # spacing: no two grid points are equivalent, and the lattice step is kept
    nn = np.array([np.sort(ori.misorientation_angle(g, grid))[1] for g in grid[::10]])
    assert np.degrees(nn.min()) > 1e-4 and np.degrees(nn.max()) <= step + 1e-9


def test_fundamental_zone_grid_rejects_bad_step():
    with pytest.raises(ValueError, match=r"step_deg must be a number between 1\.0 and 90 "
                                         r"\(degrees\), got 0\.5"):
        ori.fundamental_zone_grid(0.5)
    with pytest.raises(ValueError, match=r"got 'fine'"):
        ori.fundamental_zone_grid("fine")


# --- decomposition into zone axis, tilts and in-plane angle ---------------------------------

def test_decompose_orientation_recovers_the_angles_of_a_cubic_copy():
    base = ori.base_orientation([-1, 1, 0], [0, 0, 1])
    R = np.asarray(ori.sl_orientation(base, np.radians(-20.0), np.radians(3.0), np.radians(-2.0)), float)
    S = ori.cubic_symmetry_operators()[5]
    zones = [((0, 0, -1), (1, 0, 0)), ((-1, 1, 0), (0, 0, 1))]
    out = ori.decompose_orientation(np.stack([R @ S, np.full((3, 3), np.nan)]), zones)
    np.testing.assert_allclose([out["tilt1_deg"][0], out["tilt2_deg"][0], out["inplane_deg"][0]],
                               [3.0, -2.0, -20.0], atol=1e-6)
    np.testing.assert_allclose(out["tilt_deg"][0], np.hypot(3.0, 2.0), atol=1e-6)
    np.testing.assert_allclose(out["zone_axis"][0], _unit([-1, 1, 0]), atol=1e-15)
    assert np.all(np.isnan(out["zone_axis"][1])) and np.isnan(out["inplane_deg"][1])
    with pytest.raises(ValueError, match="decompose_orientation: zones is empty"):
        ori.decompose_orientation(R, [])
    with pytest.raises(ValueError, match="decompose_orientation: zone axis 0 is the zero vector"):
        ori.decompose_orientation(R, [((0, 0, 0), None)])
    with pytest.raises(ValueError, match=r"decompose_orientation: R must have shape \(\.\.\., 3, 3\)"):
        ori.decompose_orientation(np.eye(2), zones)


def test_rotation_about_beam_equals_the_jax_elementary_rotation():
    phi = np.array([-170.0, -3.2, 0.0, 47.5, 179.9])
    want = np.asarray(ori.rotation_about_axis(2, np.radians(phi)), float)
    got = ori.rotation_about_beam(phi)
    assert got.dtype == np.float64 and got.shape == (5, 3, 3)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


# --- orientation relationships: the NC orientations one relationship allows -----------------

def test_relationship_variants_are_the_distinct_nc_orientations():
    ops = ori.cubic_symmetry_operators()
    for conf, n in (("conf1", 3), ("conf2", 6)):
        R = ori.orientation_relationship(conf)
        reps = ori.relationship_variants(R)
        assert len(reps) == n
        np.testing.assert_array_equal(reps[0], R)         # the identity's copy comes first
        for S in ops:          # every S R_or equals one representative up to a cubic T on the right
            hits = [np.any(np.all(np.abs(M.T @ S @ R - ops) < 1e-6, axis=(1, 2))) for M in reps]
            assert sum(hits) == 1
    with pytest.raises(ValueError, match=r"relationship must be one \(3, 3\) matrix R_or, got shape \(2, 3, 3\)"):
        ori.relationship_variants(np.stack([np.eye(3)] * 2))


# --- mean under cubic symmetry ---------------------------------------------------------------

def _rot(angle_deg, axis):
    return Rotation.from_rotvec(np.radians(angle_deg) * _unit(axis)).as_matrix()


def test_mean_orientation_of_different_rotations_under_symmetry():
    """+-1.5 deg about crystal e1 and +-0.8 deg about crystal (0, 1, 1): the chordal mean of
    R0 exp(+t K) and R0 exp(-t K) is R0 B with B symmetric positive definite, so the mean is R0
    exactly; the members are given as cubic copies R S, and none of them is R0."""
    R0 = _rot(37.0, (1.0, -2.0, 0.5))
    S = ori.cubic_symmetry_operators()
    members = [R0 @ _rot(1.5, (1, 0, 0)), R0 @ _rot(-1.5, (1, 0, 0)),
               R0 @ _rot(0.8, (0, 1, 1)), R0 @ _rot(-0.8, (0, 1, 1))]
    copies = np.stack([m @ S[k] for m, k in zip(members, (0, 3, 7, 17))])
    m = ori.mean_orientation(copies)
    assert np.degrees(ori.misorientation_angle(m, R0)) < 1e-6
    assert min(np.degrees(ori.misorientation_angle(m, copies))) > 0.7      # not one of the members
    m2 = ori.mean_orientation(copies[::-1])                                # order does not matter
    assert np.degrees(ori.misorientation_angle(m2, R0)) < 1e-6


def test_mean_orientation_of_unequal_rotations_about_one_axis():
    """Rotations by 0, 1 and 5 deg about one axis: the chordal mean is the rotation by
    atan2(mean sin, mean cos) about that axis (1.9997 deg), not the median (1 deg) or first."""
    R0 = _rot(20.0, (0.3, 0.1, 1.0))
    axis = np.array([2.0, -1.0, 1.0])
    angles = np.radians([0.0, 1.0, 5.0])
    S = ori.cubic_symmetry_operators()
    copies = np.stack([_rot(np.degrees(t), axis) @ R0 @ S[k] for t, k in zip(angles, (5, 0, 11))])
    want = _rot(np.degrees(np.arctan2(np.mean(np.sin(angles)), np.mean(np.cos(angles)))), axis) @ R0
    m = ori.mean_orientation(copies)
    assert np.degrees(ori.misorientation_angle(m, want)) < 1e-6
    assert abs(np.degrees(ori.misorientation_angle(m, R0)) - 1.9997) < 1e-3
    np.testing.assert_allclose(m @ m.T, E, atol=1e-14)
    assert np.linalg.det(m) == pytest.approx(1.0, abs=1e-14)


def test_mean_orientation_errors():
    with pytest.raises(ValueError, match=r"mean_orientation: R must be N >= 1 finite .* got shape \(0, 3, 3\)"):
        ori.mean_orientation(np.zeros((0, 3, 3)))
    with pytest.raises(ValueError, match="with non-finite values; drop the frames without a fitted"):
        ori.mean_orientation(np.full((2, 3, 3), np.nan))
