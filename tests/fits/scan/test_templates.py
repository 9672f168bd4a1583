"""Tests of the template bank of the orientation search (fits/scan/templates.py): zone-axis grid, shell
signatures, base orientations, the chi grid check and the npz cache."""
import numpy as np
import pytest

import fits.scan.search
import fits.scan.templates
from fits.scan.templates import (
    base_orientations,
    build_template_bank,
    check_chi_grid,
    ewald_angle,
    ring_directions,
    shell_members,
    shell_signatures,
    zone_axis_grid,
)
from xmodel import orientation

CHI = np.arange(180) * 2.0 - 179.0
# zone axes with ties of the default reference ([111], [-110]), the paper's zones and random ones
SPECIAL = np.array([[1, 1, 1], [0, 0, -1], [-1, 1, 0], [3, 0, -1], [1, 1, 2], [1, 0, 0], [0.3, -0.3, 0.9]], float)


def test_search_re_exports_the_template_side():
    # other modules and older callers import the template bank from fits.scan.search
    for name in ("DEFAULT_SHELLS", "TWO_PI", "TemplateBank", "base_orientations", "build_template_bank",
                 "check_chi_grid", "ewald_angle", "ring_directions", "shell_members", "shell_signatures",
                 "zone_axis_grid"):
        assert getattr(fits.scan.search, name) is getattr(fits.scan.templates, name), name
        assert name in fits.scan.search.__all__, name
    assert all(hasattr(fits.scan.search, name) for name in fits.scan.search.__all__)


def test_zone_axis_grid_covers_the_sphere():
    grid = zone_axis_grid(3.0)
    rng = np.random.default_rng(0)
    d = rng.normal(size=(300, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    ops = orientation.cubic_symmetry_operators()
    copies = np.einsum("sij,nj->nsi", ops, d)                      # every symmetric copy
    cos = np.einsum("nsi,ki->nsk", copies, grid).max(axis=(1, 2))
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 3.0


def test_bad_step_and_chi_grid_messages():
    with pytest.raises(ValueError, match="step_deg must be between 0.25 and 20"):
        zone_axis_grid(0.01)
    with pytest.raises(ValueError, match="not regular over 360 deg"):
        check_chi_grid(np.linspace(-90, 90, 100))


def test_bank_is_cached(tmp_path):
    b1 = build_template_bank(CHI, wavelength_A=0.898, lattice_constant=150.0, step_deg=5.0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("templates-*.npz"))) == 1
    b2 = build_template_bank(CHI, wavelength_A=0.898, lattice_constant=150.0, step_deg=5.0, cache_dir=tmp_path)
    np.testing.assert_array_equal(b1.signatures, b2.signatures)


@pytest.mark.parametrize("sigma_deg, wavelength", [(1.5, 0.898), (3.0, 4.0), (60.0, 0.898)])
def test_shell_signatures_equal_the_direct_sum(sigma_deg, wavelength):
    # direct: every member at every chi bin (the former template code); 60 deg makes every window
    # the full circle, 4 A makes the Ewald offset (u_z sin a) matter
    rng = np.random.default_rng(3)
    dirs = np.concatenate([SPECIAL, rng.normal(size=(5, 3))])
    bases = base_orientations(dirs)
    chi = np.arange(90) * 4.0 - 178.0
    shells = (3, 4, 8, 11, 19)
    a = rng.uniform(120.0, 160.0, size=dirs.shape[0])
    q = 2 * np.pi * np.sqrt(np.array(shells, float))[None, :] / a[:, None]      # (D, S) 1/A
    sigma = np.radians(sigma_deg)
    fast = shell_signatures(bases, ewald_angle(q, wavelength), chi, sigma, shells)
    direct = np.zeros(fast.shape)
    for d in range(dirs.shape[0]):
        for j, s in enumerate(shells):
            ring = ring_directions(q[d, j], chi, wavelength)
            cos = (bases[d] @ shell_members(s).T).T @ ring.T                       # (M, C)
            direct[d, j] = np.exp(-(1.0 - cos) / sigma ** 2).sum(axis=0)
    assert direct.max() > 0.9                                                   # the rings are lit
    # terms below exp(-36) per member are dropped: 1e-14 absolute on the sum of Gaussians
    np.testing.assert_allclose(fast ** 2, direct, rtol=1e-12, atol=1e-14)


def test_base_orientations_equal_the_scalar_constructor():
    dirs = np.concatenate([SPECIAL, -SPECIAL, np.random.default_rng(5).normal(size=(20, 3))])
    want = np.stack([orientation.base_orientation(d) for d in dirs])
    np.testing.assert_allclose(base_orientations(dirs), want, rtol=0, atol=1e-15)


def test_per_shell_sigma_and_the_size_term(tmp_path):
    """A (S,) sigma gives each shell the signature of its own sigma; the bank's size term (the
    "crystal" SL peak shape) widens the low shells most and keeps the default bank as it was."""
    rng = np.random.default_rng(8)
    bases = base_orientations(np.concatenate([SPECIAL, rng.normal(size=(3, 3))]))
    chi = np.arange(90) * 4.0 - 178.0
    shells = (3, 4, 8)
    alpha = ewald_angle(2 * np.pi * np.sqrt(np.array(shells, float)) / 150.0, 0.898)
    sigmas = np.radians([2.5, 2.0, 1.5])
    both = shell_signatures(bases, alpha[None, :], chi, sigmas, shells)
    for j, s in enumerate(shells):
        one = shell_signatures(bases, alpha[None, j:j + 1], chi, float(sigmas[j]), (s,))
        # the chi windows follow the widest member: terms below exp(-36) differ
        np.testing.assert_allclose(both[:, j] ** 2, one[:, 0] ** 2, rtol=1e-12, atol=1e-14)
    kw = {"wavelength_A": 0.898, "lattice_constant": 150.0, "step_deg": 5.0, "shells": shells}
    plain = build_template_bank(CHI, **kw, cache_dir=tmp_path)
    assert "size_sigma" not in plain.key
    sized = build_template_bank(CHI, **kw, size_sigma=1.5e-3, cache_dir=tmp_path)
    assert sized.key["size_sigma"] == 1.5e-3 and len(list(tmp_path.glob("templates-*.npz"))) == 2
    # a wider peak: a larger signature sum on the ring's lit bins, most so on the lowest shell
    gain = (sized.signatures ** 2).sum(axis=(0, 2)) / (plain.signatures ** 2).sum(axis=(0, 2))
    assert np.all(gain > 1.0) and gain[0] == gain.max()
