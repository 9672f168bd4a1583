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

#: the keys `xmodel.orientation.decompose_orientation` returns, each a dataset of /entry/fits
ANGLE_KEYS = ("zone_axis", "tilt_deg", "tilt1_deg", "tilt2_deg", "inplane_deg")
