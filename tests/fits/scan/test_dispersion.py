"""Quasi-likelihood decisions of the scan fit: deviance margins divided by the dispersion
(`fits.scan.starts.replaces`, `Candidate.dispersion`, `fits.batch.effective_dispersion`)."""
import numpy as np

from fits.batch import effective_dispersion
from fits.scan.starts import Candidate, replaces
from fits.status import FitStatus


def test_effective_dispersion_has_the_poisson_floor():
    np.testing.assert_array_equal(effective_dispersion([0.5, 1.0, 2.5, np.nan, np.inf]), [1.0, 1.0, 2.5, 1.0, 1.0])


def test_replace_margin_is_divided_by_the_dispersion():
    # 15 deviance units better: clearly better for Poisson noise (margin 10) ...
    assert replaces(985.0, 1000.0, 10.0)
    assert replaces(985.0, 1000.0, 10.0, dispersion=0.5)          # never below the Poisson floor
    # ... but a near tie when the frame scatters twice as much as Poisson (15 / 2 < 10)
    assert not replaces(985.0, 1000.0, 10.0, dispersion=2.0)
    assert replaces(985.0, 1000.0, 10.0, dispersion=2.0, old_agrees=False, new_agrees=True)
    assert replaces(975.0, 1000.0, 10.0, dispersion=2.0)
    assert replaces(5000.0, np.inf, 10.0, dispersion=3.0)          # no fit before: any fit


def test_candidate_dispersion_from_a_finished_result():
    c = Candidate(frame=0, objective=1.0, status=FitStatus.OK, params=None, result={"dispersion": np.array([1.7])})
    assert c.dispersion == 1.7
    assert Candidate(frame=0, objective=1.0, status=FitStatus.OK, params=None,
                     result={"dispersion": np.array([0.8])}).dispersion == 1.0
    assert Candidate(frame=0, objective=1.0, status=FitStatus.OK, params=None).dispersion == 1.0
