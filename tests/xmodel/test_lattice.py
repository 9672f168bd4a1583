"""Tests for xmodel.lattice: extinctions, ordering, families, spacings, Table S1 numbers."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xmodel.lattice import (
    d_spacing,
    families,
    fcc_allowed,
    fcc_reflections,
    g_vectors,
    lattice_constant_from_q,
    multiplicity,
    q_of,
    rock_salt_reflections,
)


def test_fcc_allowed_matches_four_point_lattice_sum():
    hkl = np.array(list(itertools.product(range(-3, 4), repeat=3)))
    h, k, l = hkl.T
    f = 1 + (-1.0) ** (k + l) + (-1.0) ** (h + l) + (-1.0) ** (h + k)
    expected = np.isclose(f, 4.0) & np.any(hkl != 0, axis=1)
    np.testing.assert_array_equal(fcc_allowed(hkl), expected)
    assert not fcc_allowed(np.array([0, 0, 0]))
    assert fcc_allowed(np.array([3, 1, 1])) and not fcc_allowed(np.array([2, 1, 0]))


def test_reflections_are_complete_allowed_and_sorted():
    a, q_max = 150.0, 0.25
    hkl = fcc_reflections(a, q_max)
    assert hkl.dtype == np.int64 and hkl.shape[1] == 3
    assert np.all(fcc_allowed(hkl))
    q = q_of(hkl, a)
    assert np.all(q > 0) and np.all(q <= q_max)
    # complete: brute-force count
    r = range(-10, 11)
    brute = [t for t in itertools.product(r, r, r) if fcc_allowed(np.array(t)) and q_of(np.array(t), a) <= q_max]
    assert len(brute) == len(hkl) == len({tuple(t) for t in hkl.tolist()})
    # sorted by |G| (exact integer key), then hkl descending lexicographically
    keys = [(int((t**2).sum()), *(-t).tolist()) for t in hkl]
    assert keys == sorted(keys)
    assert hkl[:8].tolist() == [[1, 1, 1], [1, 1, -1], [1, -1, 1], [1, -1, -1],
                                [-1, 1, 1], [-1, 1, -1], [-1, -1, 1], [-1, -1, -1]]
    assert hkl[8:14].tolist() == [[2, 0, 0], [0, 2, 0], [0, 0, 2], [0, 0, -2], [0, -2, 0], [-2, 0, 0]]
    np.testing.assert_array_equal(fcc_reflections(a, q_max), hkl)  # deterministic


def test_mixed_parity_absent():
    members = {tuple(t) for t in fcc_reflections(150.0, 0.3).tolist()}
    for forbidden in [(1, 0, 0), (1, 1, 0), (2, 1, 0), (2, 1, 1), (3, 2, 1), (0, 0, 0)]:
        assert forbidden not in members


def test_q_max_is_inclusive():
    q200 = q_of(np.array([2, 0, 0]), 150.0)
    assert [2, 0, 0] in fcc_reflections(150.0, q200).tolist()
    assert [2, 0, 0] not in fcc_reflections(150.0, 0.999 * q200).tolist()


@pytest.mark.parametrize(
    "family, m", [((1, 1, 1), 8), ((2, 0, 0), 6), ((2, 2, 0), 12), ((3, 1, 1), 24), ((2, 2, 2), 8),
                  ((4, 2, 0), 24), ((3, 2, 1), 48), ((0, 0, 0), 1), ((-1, 3, 1), 24)]
)
def test_multiplicity_values(family, m):
    assert multiplicity(family) == m


def test_family_counts_equal_multiplicities():
    hkl = fcc_reflections(150.0, 0.3)
    index, reps = families(hkl)
    counts = np.bincount(index)
    assert reps[:6].tolist() == [[1, 1, 1], [2, 0, 0], [2, 2, 0], [3, 1, 1], [2, 2, 2], [4, 0, 0]]
    assert np.all(reps[:, 0] >= reps[:, 1]) and np.all(reps[:, 1] >= reps[:, 2]) and np.all(reps[:, 2] >= 0)
    assert [multiplicity(r) for r in reps] == counts.tolist()
    np.testing.assert_array_equal(-np.sort(-np.abs(hkl), axis=1), reps[index])
    assert counts.sum() == len(hkl)


def test_superlattice_q_values_for_a_150():
    a = 150.0
    q = {hkl: float(q_of(np.array(hkl), a)) for hkl in [(2, 0, 0), (3, 1, 1), (2, 2, 2), (3, 3, 1)]}
    assert round(q[(2, 0, 0)], 4) == 0.0838
    assert round(q[(3, 1, 1)], 4) == 0.1389
    assert round(q[(2, 2, 2)], 4) == 0.1451
    # 2 pi sqrt(19) / 150 = 0.18259 (a brief quoted 0.1827; the exact value rounds to 0.1826)
    assert round(q[(3, 3, 1)], 4) == 0.1826
    # DESIGN.md: q = 0.143 lies between 311 and 222, so q alone cannot index it
    assert q[(3, 1, 1)] < 0.143 < q[(2, 2, 2)]


def test_table_s1_lattice_constant_remark():
    assert round(float(lattice_constant_from_q(0.183, np.array([3, 3, 1]))), 1) == 149.7
    assert round(float(lattice_constant_from_q(0.181, np.array([3, 3, 1]))), 1) == 151.3
    hkl = fcc_reflections(150.0, 0.2)
    np.testing.assert_allclose(lattice_constant_from_q(q_of(hkl, 150.0), hkl), 150.0, rtol=1e-14)


def test_atomic_lattice_pbs():
    hkl = rock_salt_reflections(5.936, 2.2)
    index, reps = families(hkl)
    assert reps.tolist() == [[1, 1, 1], [2, 0, 0]]
    assert np.bincount(index).tolist() == [8, 6]
    np.testing.assert_allclose(q_of(reps, 5.936), [1.8333, 2.1169], atol=1e-4)
    np.testing.assert_allclose(2 * math.pi / d_spacing(reps, 5.936), q_of(reps, 5.936), rtol=1e-14)
    np.testing.assert_allclose(d_spacing(np.array([1, 1, 1]), 5.936), 3.4271, atol=1e-4)


def test_g_vectors_numpy_and_traced_jax():
    hkl = fcc_reflections(150.0, 0.15)
    g = g_vectors(hkl, 150.0)
    assert isinstance(g, np.ndarray) and g.shape == hkl.shape
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), q_of(hkl, 150.0), rtol=1e-14)

    def total_length(a):
        return jnp.sum(jnp.linalg.norm(g_vectors(hkl, a), axis=1))

    grad = jax.jit(jax.grad(total_length))(150.0)
    np.testing.assert_allclose(grad, -np.sum(q_of(hkl, 150.0)) / 150.0, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(q_of, static_argnums=())(jnp.asarray(hkl), 150.0), q_of(hkl, 150.0), rtol=1e-12)


def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"a must be a positive, finite number .* got -150"):
        fcc_reflections(-150.0, 0.2)
    with pytest.raises(ValueError, match=r"q_max must be a positive, finite number .* got nan"):
        fcc_reflections(150.0, float("nan"))
    with pytest.raises(ValueError, match=r"needs Miller indices up to \d+, more than the 128 .* Lower q_max"):
        rock_salt_reflections(5936.0, 2.2)
    with pytest.raises(ValueError, match=r"hkl must hold integer Miller indices, got non-integer values \[0.5\]"):
        fcc_allowed(np.array([0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"hkl must have shape \(\.\.\., 3\)"):
        fcc_allowed(np.array([1, 1]))
    with pytest.raises(ValueError, match=r"hkl_family must be three Miller indices, e.g. \(3, 1, 1\)"):
        multiplicity([[1, 1, 1]])
    with pytest.raises(ValueError, match=r"hkl must have shape \(N, 3\), got shape \(3,\)"):
        families(np.array([1, 1, 1]))


def test_structure_keeps_every_reflection_that_enters_q_max_over_the_lattice_constant_range():
    """A fit letting a vary over (130, 150) A needs the reflections below q_max at a = 150 A
    (333/511, 440, 531 at 0.218-0.248 1/A), which a = 130 A puts beyond 0.25 1/A."""
    from xmodel.parameters import Structure

    wide = Structure.build(lattice_constant=140.0, q_max_sl=0.25, lattice_constant_range=(130.0, 150.0))
    at_150 = fcc_reflections(150.0, 0.25)
    assert {tuple(h) for h in at_150} <= {tuple(h) for h in wide.sl_hkl}
    n = np.sum(wide.sl_hkl ** 2, axis=1)
    assert {27, 32, 35} <= set(n.tolist())
