"""Shared fixtures of the study tests: a small float64 study of the yellow domain."""
import pytest

from xmodel.config import default_paths, load_config

YELLOW = [str(p) for p in default_paths("yellow")]
#: a 16x binned Eiger 4M (135 x 129 points): fast, still with SL spots and AL arcs
SMALL = ["detector.binning=16"]
NAMES = ("lattice_constant", "tilt1_deg", "disorder_deg", "al_scale")


@pytest.fixture(scope="session")
def small_problem():
    """`StudyProblem` of the yellow domain on the 16x binned detector, four parameters."""
    from fits.study.problem import StudyProblem

    return StudyProblem.from_config(load_config(YELLOW, SMALL), NAMES, grid="binned")
