"""One frame of a realistic twin, rendered on its own: a scan point without the whole scan.

`render_point` returns the counts of scan point ``i`` exactly as `synthesize_realspace` writes
them into frame ``i`` (the same expected counts, `RealspaceScan.expected`, and the same Poisson
draw, ``SeedSequence(seed, spawn_key=(i,))``), with that point's ground truth
(`xmodel.twin.point_truth`). `bulk_point` chooses a point by a fixed rule, never by how well
it fits: the in-domain, unmixed point farthest from an empty area.

Like the rest of `xmodel.realspace`, this module never imports the Gaussian-peak model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodel.realspace.engine import (
    GRAIN_LATTICE,
    GRAIN_ROTATION,
    RealspaceScan,
    grain_orientations,
)
from xmodel.realspace.settings import load_settings
from xmodel.twin import point_truth

__all__ = ["RealisticFrame", "bulk_point", "render_point"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class RealisticFrame:
    """One rendered frame of a realistic twin and its truth.

    Attributes
    ----------
    counts : (rows, cols) uint32 Poisson counts, as in the frame of `synthesize_realspace`
        (masked pixels hold their draw too; the reduction leaves them out).
    expected : (rows, cols) float64 expected counts (flux drift, nuisances and bad pixels included).
    point : the scan point (frame index) rendered.
    truth : the point's row of `xmodel.twin.point_truth` (label, label_name, orientation_matrix,
        lattice_constant in A, tilt_deg, inplane_deg, disorder_deg, configuration, ...), plus
        grain_orientation_matrix, the mean orientation of the grains in the beam
        (`RealspaceScan.grain_orientation`, composed from the frame's facts as
        ``/truth/grain_orientation_matrix``: `xmodel.realspace.engine.grain_orientations`), and
        grain_lattice_constant, the grains' lattice constant in the plane normal to the beam (A,
        `xmodel.realspace.engine.ComponentDraw.grain_lattice_constant`).
    sl_snr : SL detectability of the frame (sum s^2 / mu over the SAXS pixels, as the truth's ``sl_snr``).
    n_nanocrystals : NCs summed coherently in the frame's SAXS.
    experiment : the twin's `xmodel.experiment.Experiment` (geometry and mask of the frame).
    name : the realistic twin's name.
    """

    counts: np.ndarray
    expected: np.ndarray
    point: int
    truth: dict
    sl_snr: float
    n_nanocrystals: int
    experiment: object
    name: str


def bulk_point(truth: dict) -> int:
    """The in-domain, unmixed scan point farthest from an empty area (lowest index on ties).

    Parameters
    ----------
    truth : `xmodel.twin.point_truth` of the twin (``label``, ``empty``, ``mixed``,
        ``boundary_distance_um``: distance from the beam centre to the nearest empty area, um).

    Returns
    -------
    int
        The scan point (frame index).

    Raises
    ------
    ValueError
        When no point is in a domain and unmixed.
    """
    ok = (np.asarray(truth["label"]) >= 0) & ~np.asarray(truth["empty"], bool) & ~np.asarray(truth["mixed"], bool)
    if not ok.any():
        raise ValueError("the twin has no in-domain, unmixed scan point (every point is empty or mixed); "
                         "enlarge the scan or its domains.")
    distance = np.where(ok, np.asarray(truth["boundary_distance_um"], float), -np.inf)
    return int(np.argmax(distance))


def render_point(config: str | Path, point: int | None = None, overrides=()) -> RealisticFrame:
    """Render one scan point of a realistic twin (``configs/twin_realistic_demo.toml``).

    Parameters
    ----------
    config : a realistic-twin TOML (`xmodel.realspace.settings.load_settings`).
    point : the scan point (frame index); None: `bulk_point`.
    overrides : ``--set`` strings for the simulator or the twin it names (as ``xmodel synth --set``).

    Returns
    -------
    RealisticFrame
        Counts identical to frame ``point`` of ``xmodel synth CONFIG --engine realspace``
        with the same overrides.

    Raises
    ------
    ValueError
        ``point`` outside the scan (the message names the twin and its number of points);
        the errors of `load_settings` and `xmodel.twin.load_twin` for a bad file.
    """
    settings = load_settings(config, overrides)
    scan = RealspaceScan(settings)
    truth = point_truth(scan.sample, scan.comps)
    n = scan.sample.n_points
    i = bulk_point(truth) if point is None else int(point)
    if not 0 <= i < n:
        raise ValueError(f"{settings.path}: point {point} is outside the scan of {n} points (0 .. {n - 1}).")
    mu, facts = scan.expected(i)
    counts = scan.counts(i, mu)
    names = scan.sample.label_names
    row = {k: v[i] for k, v in truth.items() if isinstance(v, np.ndarray) and v.shape[:1] == (n,)}
    row["label_name"] = names[int(row["label"])] if int(row["label"]) >= 0 else ""
    rotvec = np.array([[facts[k] for k in GRAIN_ROTATION]])
    row["grain_orientation_matrix"] = grain_orientations(rotvec, row["orientation_matrix"][None])[0]
    row[GRAIN_LATTICE] = facts[GRAIN_LATTICE]
    log.info("%s: point %d rendered (%s, %d NCs in the SAXS, SL detectability %.3g)", settings.name, i,
             row["label_name"] or "empty", facts["n_nanocrystals"], facts["sl_snr"])
    return RealisticFrame(counts=counts, expected=mu.reshape(scan.shape), point=i, truth=row,
                          sl_snr=float(facts["sl_snr"]), n_nanocrystals=int(facts["n_nanocrystals"]),
                          experiment=scan.experiment, name=settings.name)
