"""The one place where parameter studies use the scan pipeline.

Monte Carlo validation refits replicates "with the same fit used for scans"; the polar grid
of a study is the set of points a scan fit uses. Both come from the scan pipeline
(`fits.scan`), imported here and nowhere else in `fits.study`, so that moving that pipeline
changes one file.
"""
from __future__ import annotations

from fits.scan.frames import fit_frames
from fits.scan.settings import DEFAULT_VARY, FitSettings
from fits.scan.setup import FitSetup, fit_point_index

__all__ = ["DEFAULT_VARY", "FitSettings", "FitSetup", "fit_frames", "fit_point_index"]
