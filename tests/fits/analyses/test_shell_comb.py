"""Tests of fits.analyses.shell_comb: zone angles of fcc shells, Friedel axes, angle decision of the comb."""
import itertools

import numpy as np
import pytest

from fits.analyses.shell_comb import (
    axis_misfit,
    fit_lattice_comb,
    friedel_axes,
    friedel_spots,
    shell_zone_axes,
    spot_profiles,
)
from fits.status import FitStatus

OK, AMBIGUOUS = FitStatus.OK.code, FitStatus.AMBIGUOUS.code

Q = np.exp(np.linspace(np.log(0.055), np.log(0.2), 121))   # log bins as the reduction


def _pair_angles(n_shell):
    """Folded angles (deg) between the axes of the members in each zone of a shell."""
    out = set()
    for _, theta in shell_zone_axes(n_shell):
        for t1, t2 in itertools.combinations(theta, 2):
            d = abs(t2 - t1) % np.pi
            out.add(round(float(np.degrees(min(d, np.pi - d))), 2))
    return sorted(out)


def _brute_force_angles(hkl):
    """arccos |g1 . g2| / |g|^2 over all pairs of members of {hkl}, deg (the zone is their cross product)."""
    members = {tuple(s * v for s, v in zip(signs, perm)) for perm in itertools.permutations(hkl)
               for signs in itertools.product((1, -1), repeat=3)}
    g = np.array(sorted(members), float)
    c = np.abs(g @ g.T) / np.sum(g[0] ** 2)
    ang = np.degrees(np.arccos(np.clip(c, 0, 1)))
    return sorted({round(float(x), 2) for x in ang.ravel() if x > 1e-6})


def test_zone_angles_of_the_shells():
    assert _pair_angles(3) == [70.53]                       # 111
    assert _pair_angles(4) == [90.0]                        # 200
    assert _pair_angles(8) == [60.0, 90.0]                  # 220
    assert _pair_angles(11) == [35.1, 50.48, 62.96, 84.78]  # 311
    assert _pair_angles(12) == [70.53]                      # 222
    for n, hkl in ((3, (1, 1, 1)), (8, (2, 2, 0)), (11, (3, 1, 1)), (19, (3, 3, 1)), (20, (4, 2, 0))):
        assert _pair_angles(n) == _brute_force_angles(hkl), n
    with pytest.raises(ValueError, match="no fcc reflection has h\\^2 \\+ k\\^2 \\+ l\\^2 = 7"):
        shell_zone_axes(7)


def test_axis_misfit():
    _, theta = shell_zone_axes(11)[0]
    rot = np.radians(37.0)
    assert axis_misfit(11, theta + rot) == pytest.approx(0, abs=1e-9)
    assert axis_misfit(11, -theta + rot) == pytest.approx(0, abs=1e-9)       # mirror: the zone seen from behind
    pair_111 = np.radians([20.0, 20.0 + 70.53])
    assert np.degrees(axis_misfit(3, pair_111)) == pytest.approx(0, abs=0.01)
    assert np.degrees(axis_misfit(4, pair_111)) == pytest.approx((90 - 70.53) / 2, abs=0.01)
    assert np.degrees(axis_misfit(np.array([3, 12]), np.radians([10.0, 10.0]))) == pytest.approx(0, abs=1e-6)
    assert np.degrees(axis_misfit(np.array([3, 4]), np.radians([10.0, 10.0]))) > 10   # no 111 is parallel to a 200
    assert axis_misfit(3, np.radians([20.0])) == np.inf


def _ring(a, shells, z=30.0, sigma_rel=0.008):
    """Spot profile in noise units with the shells ``N`` of lattice constant ``a``."""
    out = np.zeros(Q.size)
    for nn in shells:
        qn = 2 * np.pi * np.sqrt(nn) / a
        out += z * np.exp(-0.5 * ((Q - qn) / (sigma_rel * qn)) ** 2)
    return out


def _axes(a, pairs):
    """Friedel axes: (shell N, azimuth deg) -> rows (q, axis rad, significance)."""
    return np.array([(2 * np.pi * np.sqrt(nn) / a, np.radians(c) % np.pi, 20.0) for nn, c in pairs]).reshape(-1, 3)


def test_angles_decide_one_shell_points_or_keep_them_ambiguous():
    """One ring: 111 of 132 A = 200 of 152.4 A, 311 of 140 A = 222 of 146.2 A; angles decide, or nothing does."""
    rng = np.random.default_rng(7)
    cases = [  # (a of the spots, shells seen, pairs (N, chi deg), expected status, expected a)
        (132.0, (3,), [(3, 15.0), (3, 85.6)], OK, 132.0),                          # 70.53 deg apart: 111
        (132.0, (3,), [(3, 15.0), (3, 105.0)], OK, 132.0 * np.sqrt(4 / 3)),        # 90 deg apart: 200 of 152.4 A
        (132.0, (3,), [(3, 15.0)], AMBIGUOUS, np.nan),                             # one pair: nothing decides
        (132.0, (3,), [(3, 15.0), (3, 95.0)], AMBIGUOUS, np.nan),                  # 80 deg: neither shell, no guess
        (140.0, (11,), [(11, 40.0), (11, 90.48)], OK, 140.0),                      # 50.48 deg: 311
        (140.0, (11,), [(11, 40.0), (11, 110.53)], OK, 140.0 * np.sqrt(12 / 11)),  # 70.53 deg: 222
        (140.0, (11,), [(11, 40.0), (11, 106.0)], AMBIGUOUS, np.nan),              # 66 deg: 311 off by 3, 222 4.5
        (132.0, (3, 12), [(3, 30.0), (12, 30.0)], AMBIGUOUS, np.nan),              # 111 || 222 = 200 || 400: open
        (132.0, (3,), [(3, 15.0), (3, 85.6), (5.3, 150.0)], AMBIGUOUS, np.nan),    # a pair neither indexing explains
    ]
    spots = np.array([np.maximum(_ring(a, sh) + rng.normal(0, 1.0, Q.size), 0) for a, sh, *_ in cases])
    axes = [_axes(a, pairs) for a, _, pairs, *_ in cases]
    plain = fit_lattice_comb(Q, spots)
    assert np.all(plain["status"] == AMBIGUOUS) and not np.any(plain["decided_by_angles"])
    res = fit_lattice_comb(Q, spots, axes=axes)
    assert res["status"].tolist() == [c[3] for c in cases]
    expected = np.array([c[4] for c in cases])
    ok = res["status"] == OK
    assert np.all(np.isnan(res["lattice_constant"][~ok]))
    # one noisy ring (z = 30, clipped at 0) refines a to about 0.5 %, not better
    np.testing.assert_allclose(res["lattice_constant"][ok], expected[ok], rtol=0.01)
    assert res["decided_by_angles"].tolist() == [c[3] == OK for c in cases]
    with pytest.raises(ValueError, match="axes has 2 entries but spots has 9 profiles"):
        fit_lattice_comb(Q, spots, axes=axes[:2])


def test_friedel_axes_find_pairs_at_their_azimuths():
    rng = np.random.default_rng(8)
    n_chi, n_q = 180, 40
    chi_deg = -180 + (np.arange(n_chi) + 0.5) * 2.0
    q = np.linspace(0.06, 0.1, n_q)
    npix = np.full((n_chi, n_q), 50.0)
    lam = np.full((2, n_chi, n_q), 0.5)
    for c, iq in ((10.0, 12), (80.53, 12)):            # two pairs of one ring, 70.53 deg apart
        for cc in (c, c - 180.0):
            in_q = -0.5 * ((np.arange(n_q) - iq) / 0.8) ** 2
            lam[0] += 4.0 * np.exp(-0.5 * ((chi_deg[:, None] - cc) / 1.5) ** 2 + in_q)
    lam[1, 40, 20] += 3.0                              # no mate: not a Bragg pair
    polar = rng.poisson(lam * npix) / npix
    prof, axes = friedel_spots(polar, npix, q, chi_deg)
    np.testing.assert_allclose(prof, spot_profiles(polar, npix))
    assert len(axes) == 2 and axes[1].shape == (0, 3)
    assert axes[0].shape == (2, 3)
    got = np.sort(np.degrees(axes[0][:, 1]))
    np.testing.assert_allclose(got, [10.0, 80.53], atol=0.5)
    np.testing.assert_allclose(axes[0][:, 0], q[12], atol=0.5 * (q[1] - q[0]))
    assert np.degrees(axis_misfit(3, axes[0][:, 1])) < 0.5
    with pytest.raises(ValueError, match="need an even number of chi bins"):
        friedel_axes(polar[:, :-1], npix[:-1], q, chi_deg[:-1])
