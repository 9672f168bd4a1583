"""The ``/entry/qmap/<family>`` groups of a reduced scan: where `fits.analyses.qmap.qmap_scan`
(``xmodel qmap``) writes the peak-position maps and line profiles of a superlattice family.

Layout (NeXus; `xmodel.nexus`):

* ``/entry/qmap`` (NXcollection), one ``<family>`` group (NXprocess: program, version, date,
  the settings as JSON in ``parameters``) per family (``200``, ``311``) with the attributes
  ``family``, ``hkl``, ``q_window``, ``a_nominal``, ``a_range`` (each with a ``*_units``
  attribute), ``background``, ``spot_source`` and ``scan_shape``;
* per-frame datasets in the frames' order (`FIELDS`: name -> unit, description), the status
  datasets with the ``status_codes`` attribute of `fits.status`;
* ``maps`` (NXcollection): ``q``, ``lattice_constant`` and ``status`` as images over the scan
  positions, rows ``y`` and columns ``x`` in um (`xmodel.nexus.create_scan_map`); the file's
  ``default`` chain leads to ``maps/q``, so the last analysis written is what a viewer opens;
* ``line`` (NXdata, with ``--from``/``--to``): ``q`` (with ``q_errors``) over ``distance_um``,
  ``d_spacing`` and ``lattice_constant`` as auxiliary signals, and the sampled ``frame``,
  ``x_um``, ``y_um``.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np

GROUP = "/entry/qmap"

#: per-frame dataset -> (unit string or None for dimensionless, description)
FIELDS: dict[str, tuple[str | None, str]] = {
    "center": ("1/angstrom", "q of the family, 2 pi sqrt(h^2+k^2+l^2) / a, a from the joint fcc shell comb"),
    "center_err": ("1/angstrom", "one-sigma error of q"),
    "sigma": ("1/angstrom", "Gaussian sigma"),
    "sigma_err": ("1/angstrom", "error of sigma"),
    "fwhm": ("1/angstrom", "2.3548 sigma"),
    "amplitude": ("counts/angstrom", "Gaussian area (lmfit GaussianModel amplitude), counts per pixel x 1/A"),
    "amplitude_err": ("counts/angstrom", "error of the area"),
    "height": ("counts", "peak height above background, counts per pixel"),
    "intercept": ("counts", "background at the window centre, counts per pixel"),
    "slope": ("counts*angstrom", "background slope, counts per pixel per 1/A"),
    "redchi": ("counts^2", "reduced chi-square (unweighted), (counts per pixel)^2"),
    "status": (None, "outcome of the joint lattice constant, see attribute status_codes"),
    "lattice_constant": ("angstrom", "joint fcc lattice constant from all visible shells"),
    "lattice_constant_err": ("angstrom", "one-sigma error of a"),
    "peak_center": ("1/angstrom", "centre of the family's own Gaussian in the radial profile"),
    "peak_center_err": ("1/angstrom", "one-sigma error of peak_center"),
    "peak_status": (None, "outcome of the family's own Gaussian fit, see attribute status_codes"),
    "alias_lattice_constant": ("angstrom", "the other indexing an ambiguous point allows"),
    "score": (None, "fcc comb score: sum of squared shell significances (noise units)"),
    "evidence": (None, "score minus the best other indexing's score (chi-square units)"),
    "n_shells": (None, "shells fitted to refine a"),
    "decided_by_angles": (None, "true where the angles between Friedel pairs on a ring chose the indexing"),
    "decided_by_prior": (None, ("true where the model fit's lattice constant (fits_file) chose the indexing "
                                "of ambiguous spots")),
    "in_window": (None, ("false where the family's q from the joint lattice constant lies outside q_window "
                         "(then NaN with status NO_PEAK)")),
}

#: map name -> (per-frame dataset, unit, axis label of the family's value)
MAPS = {"q": ("center", "1/angstrom", "q_{family} (1/A)"),
        "lattice_constant": ("lattice_constant", "angstrom", "lattice constant a (A)"),
        "status": ("status", None, "status code (status_codes of ../../status)")}

#: the layout of a file whose frames lie on no known grid: the maps are plotted per frame
PER_FRAME = SimpleNamespace(grid=None)


def group_path(family: str) -> str:
    """HDF5 path of a family's group, e.g. ``/entry/qmap/200``."""
    return f"{GROUP}/{family}"


def write_qmap(path: str | Path, family: str, values: Mapping[str, np.ndarray], *, scan=PER_FRAME,
               attrs: Mapping[str, object], parameters: Mapping[str, object], line=None,
               line_ends: tuple[tuple[float, float], tuple[float, float]] | None = None) -> str:
    """Write ``/entry/qmap/<family>`` (replaced if present) into the reduced scan ``path``.

    Parameters
    ----------
    path : the reduced scan (HDF5, appended to).
    family : ``"200"`` or ``"311"``.
    values : per-frame arrays by the names of `FIELDS`.
    scan : the scan's `xmodel.reduced.ReducedScan` (grid and positions of the maps), or
        `PER_FRAME` for frames on no known grid.
    attrs : group attributes (``family``, ``hkl``, ``q_window``, ...; module docstring).
    parameters : the settings of the run (JSON in the NXprocess).
    line : a `fits.analyses.qmap.LineProfile` with ``q``, ``q_err``, ``d_spacing`` and
        ``lattice_constant`` values, or None; line_ends : its ``(x0, y0), (x1, y1)`` in um.

    Returns
    -------
    str
        The group's path.
    """
    from fits.status import status_codes_attribute
    from xmodel import nexus

    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"qmap datasets {unknown} are not in the schema; known: {sorted(FIELDS)}")
    base = group_path(family)
    with h5py.File(path, "a") as f:
        if base in f:
            del f[base]
        entry = nexus.create_entry(f)
        top = nexus.require_group(entry, GROUP.rsplit("/", 1)[-1], "NXcollection")
        g = top.create_group(family)
        nexus.describe_process(g, program="xmodel qmap", parameters=dict(parameters))
        g.attrs.update(dict(attrs))
        g.attrs["description"] = ("per-point family q from the joint fcc lattice constant and the family's "
                                  "Gaussian + background fit of the radial profile (Fig. 3a, S7a); per-frame "
                                  "arrays in the frames' order, as images in maps/")
        for key, v in values.items():
            units, description = FIELDS[key]
            ds = nexus.write_field(g, key, v, units=units, description=description)
            if key in ("status", "peak_status"):
                ds.attrs["status_codes"] = status_codes_attribute()
        maps = nexus.require_group(g, "maps", "NXcollection")
        first = None
        for name, (key, units, label) in MAPS.items():
            label = label.format(family=family)
            nx = nexus.create_scan_map(maps, name, name, values[key], scan, units=units, long_name=label,
                                       title=f"{label}, {family} family")
            first = first or nx
        nexus.set_default(first)
        if line is not None:
            v = line.values
            ln = nexus.create_nxdata(
                g, "line", "q", v["q"], units="1/angstrom", long_name=f"q_{family} (1/A)",
                axes=[("distance_um", line.distance_um, "um", "distance along the line (um)")],
                auxiliary={"d_spacing": (v["d_spacing"], "angstrom", "d = 2 pi / q (A)"),
                           "lattice_constant": (v["lattice_constant"], "angstrom", "d_100 = a (A)")},
                title=f"q_{family} along the line (Fig. 3b,c, S7b)", compress=False)
            nexus.write_field(ln, "q_errors", v["q_err"], units="1/angstrom", long_name="one-sigma error of q")
            nexus.write_field(ln, "frame", line.frame, description="nearest scan point of each sample")
            nexus.write_field(ln, "x_um", line.x_um, units="um", long_name="x (um)")
            nexus.write_field(ln, "y_um", line.y_um, units="um", long_name="y (um)")
            if line_ends is not None:
                ln.attrs["start_xy_um"], ln.attrs["end_xy_um"] = np.asarray(line_ends[0]), np.asarray(line_ends[1])
            ln.attrs["description"] = "line profile (Fig. 3b,c, S7b), nearest scan points"
    return base
