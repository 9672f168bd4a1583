"""Gradient-based parameter studies: Fisher information, Cramer-Rao bounds, sensitivity maps,
experiment design scans and their Monte Carlo validation (docs/studies.md).

`study` returns a `StudyResult`; `fits.study.problem.StudyProblem` holds the truth, model and
grid of one study, `fits.study.fisher` the bounds, `fits.study.sensitivity` the maps,
`fits.study.design` the scans over settings, `fits.study.montecarlo` the refits.
"""
from fits.study.result import StudyResult, study

__all__ = ["StudyResult", "study"]
