"""Facet-specific nearest-neighbour interactions of truncated-octahedron NCs (Fig. 5, S12).

Contract
--------
`facet_interactions` takes an orientation relationship (Conf1, Conf2 or a custom ``R_or``)
and the truncated-octahedron shape (distances of the {100} and {111} facets from the NC
centre) and returns, for each of the twelve <110>_SL nearest-neighbour directions, the NC
facet that the neighbour faces and the interaction it makes, plus the counts.

Geometry
--------
The NC is the intersection of the half-spaces ``n . x <= d100`` for the six <100>_AL unit
normals and ``n . x <= d111`` for the eight <111>_AL unit normals. The neighbour along the
unit direction ``u`` (AL frame, ``u = R_or^T [110]_SL / |.|``) faces the facet through which
the ray from the centre along ``u`` leaves the NC: the facet minimising ``d_f / (n_f . u)``
over ``n_f . u > 0``. The pair interacts when ``u`` is within ``max_angle_deg`` of that
facet's normal (a facet directly facing the neighbour) and the exit is not on an edge (two
facets tied). All NCs share one orientation and the NC is centrosymmetric, so the neighbour
faces back with the parallel facet of the same family: interactions are {100}-{100} or
{111}-{111}.

For Conf1 four directions are exact <100>_AL and eight lie 9.74 deg from <111>_AL (45 deg
from <100>); for Conf2 two are exact <100>_AL, eight lie 31.4 deg from <100>_AL and 30.0 deg
from <111>_AL, and two are <110>_AL (45.0 / 35.3 deg). With ``rho = d100 / d111`` the
31.4 deg directions leave through {100} when ``rho < cos 31.4 / cos 30.0 = 0.9856`` and the
9.74 deg directions leave through {111} when ``rho > cos 45 / cos 9.74 = 0.7174``. The paper's
counts (Conf1 4 + 8, Conf2 10 {100}-{100}) hold for ``0.7174 < rho < 0.9856`` and
``31.4 <= max_angle_deg < 35.3``; the regular (Archimedean) truncated octahedron,
``rho = 2 / sqrt 3 = 1.155``, gives Conf2 2 {100}-{100} + 8 {111}-{111} instead.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from xmodel.orientation import orientation_relationship

__all__ = ["FacetContact", "FacetTable", "facet_interactions", "nearest_neighbour_directions",
           "paper_shape_window", "DEFAULT_D100", "DEFAULT_D111", "DEFAULT_MAX_ANGLE_DEG"]

#: default {100} and {111} facet distances from the NC centre (Angstrom): rho = 0.912, inside
#: the window that reproduces the paper's counts (module docstring), NC radius about 34 A.
DEFAULT_D100 = 31.0
DEFAULT_D111 = 34.0
#: default largest angle between a neighbour direction and the normal of the facet it faces.
DEFAULT_MAX_ANGLE_DEG = 33.0

_EDGE_RTOL = 1e-9


def nearest_neighbour_directions() -> np.ndarray:
    """The twelve <110> nearest-neighbour directions of an fcc lattice, int64 (12, 3)."""
    dirs = [v for v in itertools.product((1, 0, -1), repeat=3) if sum(abs(x) for x in v) == 2]
    return np.array(dirs, dtype=np.int64)


def _facet_normals():
    n100 = np.vstack([np.eye(3), -np.eye(3)]).astype(np.int64)
    n111 = np.array(list(itertools.product((1, -1), repeat=3)), dtype=np.int64)
    return n100, n111


@dataclass(frozen=True)
class FacetContact:
    """One nearest-neighbour direction.

    Attributes: ``sl_direction`` (<110>_SL, int), ``al_direction`` (unit vector, AL frame),
    ``facet`` (the exit facet's normal as integers, e.g. (1, 0, 0) or (1, -1, 1); None on an
    edge), ``family`` ("100", "111" or "edge"), ``angle_deg`` (between the direction and the
    facet normal), ``angle_100_deg`` and ``angle_111_deg`` (to the nearest <100>_AL and
    <111>_AL), ``interaction`` ("{100}-{100}", "{111}-{111}" or "none").
    """

    sl_direction: tuple
    al_direction: tuple
    facet: tuple | None
    family: str
    angle_deg: float
    angle_100_deg: float
    angle_111_deg: float
    interaction: str

    def as_dict(self) -> dict:
        """JSON-ready dict."""
        return {"sl_direction": list(self.sl_direction), "al_direction": [round(x, 6) for x in self.al_direction],
                "facet": None if self.facet is None else list(self.facet), "family": self.family,
                "angle_deg": round(self.angle_deg, 3), "angle_100_deg": round(self.angle_100_deg, 3),
                "angle_111_deg": round(self.angle_111_deg, 3), "interaction": self.interaction}


@dataclass(frozen=True)
class FacetTable:
    """All twelve contacts and the counts of {100}-{100} and {111}-{111} interactions."""

    configuration: str
    d100: float
    d111: float
    max_angle_deg: float
    contacts: tuple
    n100: int
    n111: int

    def as_dict(self) -> dict:
        """JSON-ready dict."""
        return {"configuration": self.configuration, "d100": self.d100, "d111": self.d111,
                "rho": self.d100 / self.d111, "max_angle_deg": self.max_angle_deg,
                "n_100_100": self.n100, "n_111_111": self.n111,
                "contacts": [c.as_dict() for c in self.contacts]}

    def format(self) -> str:
        """A text table (one row per <110>_SL direction, then the counts)."""
        lines = [f"configuration {self.configuration}: d100 = {self.d100:g} A, d111 = {self.d111:g} A "
                 f"(rho = {self.d100 / self.d111:.3f}), max angle {self.max_angle_deg:g} deg",
                 f"{'[uvw]_SL':>12} {'direction (AL)':>24} {'facet':>10} {'angle':>6} "
                 f"{'to<100>':>7} {'to<111>':>7}  interaction"]
        for c in self.contacts:
            d = " ".join(f"{x:6.3f}" for x in c.al_direction)
            f = "edge" if c.facet is None else "(" + " ".join(str(x) for x in c.facet) + ")"
            lines.append(f"{str(list(c.sl_direction)):>12} {d:>24} {f:>10} {c.angle_deg:6.1f} "
                         f"{c.angle_100_deg:7.1f} {c.angle_111_deg:7.1f}  {c.interaction}")
        lines.append(f"{self.n100} {{100}}-{{100}} and {self.n111} {{111}}-{{111}} interactions "
                     f"({self.n100 + self.n111} of 12)")
        return "\n".join(lines)


def _positive(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive distance in Angstrom (facet plane to NC centre), "
                         f"got {value!r}; e.g. --d100 31 --d111 34.")
    return v


def facet_interactions(configuration: str = "conf1", *, d100: float = DEFAULT_D100, d111: float = DEFAULT_D111,
                       max_angle_deg: float = DEFAULT_MAX_ANGLE_DEG, relationship: np.ndarray | None = None
                       ) -> FacetTable:
    """Which NC facet each of the twelve nearest neighbours faces, and the interaction counts.

    Parameters
    ----------
    configuration
        ``"conf1"`` or ``"conf2"`` (case-insensitive), or ``"custom"`` with ``relationship``.
    d100, d111
        Distances of the {100}_AL and {111}_AL facet planes from the NC centre, Angstrom
        (only their ratio matters).
    max_angle_deg
        Largest angle (deg) between a neighbour direction and the normal of its exit facet
        for the facet to count as facing the neighbour.
    relationship
        ``R_or`` (3, 3), AL crystal -> SL crystal, for ``configuration="custom"``.

    Returns
    -------
    FacetTable

    Raises
    ------
    ValueError
        Unknown configuration, non-positive distances or angle, or a bad ``relationship``.

    Notes
    -----
    Paper, Discussion and Fig. 5 / S12 (Conf1: 4 {100}-{100} + 8 {111}-{111}; Conf2: 10
    {100}-{100}); orientation relationships from `xmodel.orientation.orientation_relationship`;
    the ray-exit rule and the shape window are derived in the module docstring.

    Validation
    ----------
    Default shape reproduces the paper's counts for both configurations; the regular
    truncated octahedron (d100/d111 = 2/sqrt 3) gives Conf2 2 + 8; the window edges
    0.7174 and 0.9856 (tests/fits/analyses/test_facets.py).
    """
    d100 = _positive(d100, "d100")
    d111 = _positive(d111, "d111")
    try:
        max_angle = float(max_angle_deg)
    except (TypeError, ValueError):
        max_angle = float("nan")
    if not np.isfinite(max_angle) or not 0 < max_angle <= 90:
        raise ValueError(f"max_angle_deg must be in (0, 90] degrees, got {max_angle_deg!r}.")
    name = configuration.lower() if isinstance(configuration, str) else configuration
    if name == "custom":
        if relationship is None:
            raise ValueError("configuration 'custom' needs relationship=R_or (3x3, AL crystal -> SL crystal).")
        R = np.asarray(relationship, float)
        if R.shape != (3, 3) or not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) <= 0:
            raise ValueError(f"relationship must be a 3x3 proper rotation matrix (orthogonal, det +1), got "
                             f"shape {R.shape}; build it "
                             f"with xmodel.orientation.orientation_relationship('custom', pairs).")
    elif name in ("conf1", "conf2"):
        if relationship is not None:
            raise ValueError(f"relationship was given with configuration {configuration!r}; use "
                             f"configuration='custom' to pass your own R_or.")
        R = orientation_relationship(name)
    else:
        raise ValueError(f"unknown configuration {configuration!r}; valid are 'conf1', 'conf2' (the paper's) "
                         f"and 'custom' (with relationship=R_or).")
    n100, n111 = _facet_normals()
    normals = np.vstack([n100, n111 / np.sqrt(3.0)])
    ints = np.vstack([n100, n111])
    dist = np.concatenate([np.full(6, d100), np.full(8, d111)])
    contacts = []
    for v in nearest_neighbour_directions():
        u = R.T @ v.astype(float)
        u /= np.linalg.norm(u)
        cos = normals @ u
        with np.errstate(divide="ignore"):
            t = np.where(cos > 1e-12, dist / np.where(cos > 1e-12, cos, 1.0), np.inf)
        best = np.argmin(t)
        tied = np.flatnonzero(t <= t[best] * (1 + _EDGE_RTOL))
        a100 = float(np.degrees(np.arccos(np.clip(cos[:6].max(), -1, 1))))
        a111 = float(np.degrees(np.arccos(np.clip(cos[6:].max(), -1, 1))))
        if tied.size > 1:
            facet, family, angle, inter = None, "edge", float(np.degrees(np.arccos(np.clip(cos[best], -1, 1)))), "none"
        else:
            family = "100" if best < 6 else "111"
            facet = tuple(int(x) for x in ints[best])
            angle = float(np.degrees(np.arccos(np.clip(cos[best], -1, 1))))
            inter = f"{{{family}}}-{{{family}}}" if angle <= max_angle + 1e-9 else "none"
        contacts.append(FacetContact(tuple(int(x) for x in v), tuple(float(x) for x in u), facet, family,
                                     angle, a100, a111, inter))
    n_100 = sum(c.interaction == "{100}-{100}" for c in contacts)
    n_111 = sum(c.interaction == "{111}-{111}" for c in contacts)
    return FacetTable(str(name), d100, d111, max_angle, tuple(contacts), n_100, n_111)


def paper_shape_window() -> tuple[float, float]:
    """The range of ``rho = d100 / d111`` for which the paper's counts hold.

    Returns
    -------
    (rho_min, rho_max)
        ``cos 45 / cos 9.74`` and ``cos 31.4 / cos 30.0`` (exact angles from Conf1/Conf2), about
        (0.7174, 0.9856), to be used with ``31.4 <= max_angle_deg < 35.3``.

    Notes
    -----
    Derived in the module docstring from the ray-exit rule. Validation: counts just inside
    and outside the window (tests).
    """
    n100, n111 = _facet_normals()
    angles = {}
    for name in ("conf1", "conf2"):
        R = orientation_relationship(name)
        rows = []
        for v in nearest_neighbour_directions():
            u = R.T @ v.astype(float)
            u /= np.linalg.norm(u)
            rows.append((np.max(n100 @ u), np.max(n111 @ u / np.sqrt(3.0))))
        angles[name] = np.array(rows)
    c1 = angles["conf1"][angles["conf1"][:, 0] < 0.999]  # the eight 9.74-deg directions
    c2 = angles["conf2"][(angles["conf2"][:, 0] < 0.999) & (angles["conf2"][:, 0] > 0.75)]
    return float(np.min(c1[:, 0] / c1[:, 1])), float(np.min(c2[:, 0] / c2[:, 1]))
