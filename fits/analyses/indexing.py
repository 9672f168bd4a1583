"""fcc indexing of superlattice peaks and the lattice constant per domain (Table S1).

Contract
--------
* `index_peaks` takes peak positions ``q`` (1/A), optionally their azimuths ``chi`` (deg)
  and the zone axis ``[uvw]`` along the beam, and returns one `PeakAssignment` per peak:
  the candidate fcc families, the chosen one when it is unique, and the lattice constant
  each candidate implies. It reports ambiguity instead of guessing.
* `domain_lattice_constant` gives ``<a>`` +- std (population, as Table S1) over the
  unambiguously indexed peaks.
* `radial_peaks` finds the peaks of a (domain-averaged) radial profile to feed `index_peaks`.

Rules (documented in docs/analyses.md)
--------------------------------------
1. By q: a family ``{hkl}`` is a candidate for a peak at ``q`` when the lattice constant it
   implies, ``a = 2 pi sqrt(h^2+k^2+l^2) / q``, is within ``tolerance`` (relative) of the
   nominal ``a``. Candidates are ranked by ``|a/a_nominal - 1|``. The best is taken alone
   when every other candidate deviates more than ``ambiguity_ratio`` times as much;
   otherwise the peak is ambiguous (e.g. q = 0.143 1/A at a = 150 A: 222 deviates 1.5 %,
   311 2.9 %).
2. By azimuth and zone: with ``chi`` and a zone axis, only the members of a family that lie
   in the zone (``hkl . uvw = 0``, the reflections in the plane normal to the beam) can
   appear, at in-plane angles fixed by the zone. For each hypothesis of in-plane rotation
   and handedness (every peak/member pair fixes one) a family stays a candidate when a member
   falls within ``angle_tolerance_deg`` of the peak's chi and every peak keeps at least one
   candidate. The union over consistent hypotheses replaces the q candidates.
   Without a zone axis but with chi, the zones with ``|u|, |v|, |w| <= 3`` are tried in turn.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from fits.analyses.arguments import finite_number, q_interval
from xmodel.lattice import families, fcc_reflections, lattice_constant_from_q

__all__ = ["PeakAssignment", "index_peaks", "domain_lattice_constant", "radial_peaks",
           "zone_members", "format_assignments"]


@dataclass(frozen=True)
class PeakAssignment:
    """Indexing of one peak.

    Attributes
    ----------
    q : measured position, 1/A.
    chi_deg : measured azimuth, degrees (NaN when not given).
    candidates : families ``(h, k, l)`` (``h >= k >= l >= 0``) still possible, best first.
    lattice_constants : ``a`` (Angstrom) implied by each candidate, same order.
    hkl : the assignment, or None when ambiguous or unindexed.
    status : ``"indexed"``, ``"ambiguous"`` or ``"unindexed"``.
    reason : a sentence saying what decided it.
    """

    q: float
    chi_deg: float
    candidates: tuple
    lattice_constants: tuple
    hkl: tuple | None
    status: str
    reason: str
    zones: tuple = field(default=())

    @property
    def lattice_constant(self) -> float:
        """``a`` of the assignment, Angstrom (NaN when not indexed)."""
        if self.hkl is None:
            return float("nan")
        return float(self.lattice_constants[self.candidates.index(self.hkl)])

    def as_dict(self) -> dict:
        """JSON-ready dict."""
        return {"q": self.q, "chi_deg": None if np.isnan(self.chi_deg) else self.chi_deg,
                "hkl": list(self.hkl) if self.hkl else None, "status": self.status,
                "lattice_constant": None if self.hkl is None else round(self.lattice_constant, 3),
                "candidates": [list(c) for c in self.candidates],
                "candidate_lattice_constants": [round(a, 3) for a in self.lattice_constants],
                "zones": [list(z) for z in self.zones], "reason": self.reason}


def _families(a_nominal: float, q_max: float) -> np.ndarray:
    hkl = fcc_reflections(a_nominal, q_max)
    return families(hkl)[1]


def _q_candidates(q: float, reps: np.ndarray, a_nominal: float, tolerance: float):
    a_implied = lattice_constant_from_q(q, reps)
    dev = np.abs(a_implied / a_nominal - 1.0)
    keep = np.flatnonzero(dev <= tolerance)
    keep = keep[np.argsort(dev[keep], kind="stable")]
    return [tuple(int(x) for x in reps[i]) for i in keep], [float(a_implied[i]) for i in keep], dev[keep]


def zone_members(family: tuple, zone: tuple) -> np.ndarray:
    """Members of ``{hkl}`` perpendicular to the zone axis ``[uvw]`` (``hkl . uvw = 0``).

    Parameters
    ----------
    family
        ``(h, k, l)`` of the family.
    zone
        Zone axis ``[u, v, w]`` in SL crystal coordinates (the direction along the beam).

    Returns
    -------
    numpy.ndarray
        int64, shape ``(M, 3)``: the distinct signed permutations in the zone.

    Notes
    -----
    Weiss zone law ``h u + k v + l w = 0`` (e.g. Cullity, Elements of X-ray Diffraction, 2.6).

    Validation
    ----------
    [110] zone: {200} gives +-(001) only; {111} gives +-(1-11), +-(1-1-1).
    """
    members = {tuple(s * v for s, v in zip(signs, perm))
               for perm in itertools.permutations(family)
               for signs in itertools.product((1, -1), repeat=3)}
    arr = np.array(sorted(members), dtype=np.int64)
    return arr[arr @ np.asarray(zone, np.int64) == 0]


def _zone_angles(family: tuple, zone: tuple) -> np.ndarray:
    """In-plane angles (rad) of the zone members of ``family`` in a fixed basis of the zone."""
    members = zone_members(family, zone)
    if members.size == 0:
        return np.zeros(0)
    z = np.asarray(zone, float)
    z /= np.linalg.norm(z)
    ref = np.eye(3)[np.argmin(np.abs(z))]
    e1 = ref - z * (ref @ z)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(z, e1)
    return np.arctan2(members @ e2, members @ e1)


def _wrap(x):
    return (x + np.pi) % (2.0 * np.pi) - np.pi


def _zone_consistent(chi: np.ndarray, cands: list[list[tuple]], zone: tuple, tol: float):
    """Per peak, the candidate families consistent with ``zone`` and the measured chi."""
    angles = [[_zone_angles(f, zone) for f in c] for c in cands]
    keep = [set() for _ in cands]
    hypotheses = []
    for i, per in enumerate(angles):
        for th in per:
            for s in (1.0, -1.0):
                hypotheses.extend((s, chi[i] - s * t) for t in th)
    for s, phi0 in hypotheses:
        ok = []
        for i, per in enumerate(angles):
            fits = {j for j, th in enumerate(per)
                    if th.size and np.min(np.abs(_wrap(chi[i] - phi0 - s * th))) <= tol}
            if not fits:
                break
            ok.append(fits)
        else:
            for i, fits in enumerate(ok):
                keep[i] |= fits
    return keep


def _default_zones(max_index: int = 3) -> list[tuple]:
    zones = set()
    r = range(0, max_index + 1)
    for u, v, w in itertools.product(r, r, r):
        if (u, v, w) == (0, 0, 0) or np.gcd.reduce([u, v, w]) != 1:
            continue
        zones.add(tuple(sorted((u, v, w), reverse=True)))
    # a cubic zone is fixed up to symmetry by its sorted |u|,|v|,|w| only when the signs do not
    # matter for in-plane angle sets: they do not (a signed permutation is a symmetry)
    return sorted(zones, key=lambda z: (sum(x * x for x in z), z))


def _parse_zone(zone) -> tuple:
    try:
        z = tuple(int(x) for x in zone)
    except (TypeError, ValueError):
        raise ValueError(f"zone must be three integers [u, v, w] (the SL direction along the beam), "
                         f"got {zone!r}; e.g. --zone 1,1,0.") from None
    if len(z) != 3 or z == (0, 0, 0):
        raise ValueError(f"zone must be three integers [u, v, w], not all zero, got {zone!r}; "
                         f"e.g. --zone 0,0,1.")
    return z


def index_peaks(q, chi_deg=None, *, zone=None, a_nominal: float = 150.0, tolerance: float = 0.04,
                ambiguity_ratio: float = 3.0, angle_tolerance_deg: float = 3.0) -> list[PeakAssignment]:
    """Assign fcc ``{hkl}`` to superlattice peaks; report ambiguity rather than guess.

    Parameters
    ----------
    q
        Peak positions ``|q|``, 1/A, shape ``(N,)``.
    chi_deg
        Azimuths of the peaks, degrees (pyFAI chi), shape ``(N,)``; NaN or None = unknown.
    zone
        SL zone axis ``[u, v, w]`` along the beam (e.g. ``(1, 1, 0)``); sign irrelevant.
        Used only with ``chi_deg``; without it the zones with indices up to 3 are tried.
    a_nominal
        Nominal lattice constant, Angstrom.
    tolerance
        Largest relative deviation of the implied ``a`` from ``a_nominal`` for a candidate
        (Table S1 spans -3.3 % .. +2.8 % around 150 A, so 0.04).
    ambiguity_ratio
        The best q candidate is accepted alone when every other candidate deviates more than
        this factor times its deviation.
    angle_tolerance_deg
        Largest difference between a peak's chi and a zone member's predicted azimuth, deg.

    Returns
    -------
    list of PeakAssignment
        In the input order.

    Raises
    ------
    ValueError
        If q is empty, not positive and finite, or chi has another length.

    Notes
    -----
    ``q_hkl = 2 pi sqrt(h^2+k^2+l^2) / a`` (fcc: h, k, l all even or all odd; Table S1);
    zone law ``hkl . uvw = 0``; the rules are in the module docstring.

    Validation
    ----------
    Table S1's q values give its hkl, with 0.143 and 0.141 1/A reported as 311/222
    ambiguous; with the [110] zone and azimuths the ambiguity resolves
    (tests/fits/analyses/test_indexing.py).
    """
    qv = np.atleast_1d(np.asarray(q, float))
    if qv.size == 0 or not np.all(np.isfinite(qv)) or np.any(qv <= 0):
        raise ValueError(f"q must be one or more positive peak positions in 1/A, got {q!r}.")
    if chi_deg is None:
        chi = np.full(qv.size, np.nan)
    else:
        chi = np.atleast_1d(np.asarray(chi_deg, float))
        if chi.size != qv.size:
            raise ValueError(f"chi has {chi.size} values but q has {qv.size}; give one azimuth (deg) per "
                             f"peak, in the same order (NaN for unknown).")
    for name, v in (("a_nominal", a_nominal), ("tolerance", tolerance), ("ambiguity_ratio", ambiguity_ratio)):
        if not np.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a positive number, got {v!r}.")
    reps = _families(a_nominal * (1 + tolerance), float(qv.max()) * (1 + tolerance) * 1.001)
    cands, alist, devs = zip(*(_q_candidates(x, reps, a_nominal, tolerance) for x in qv))
    cands, alist = [list(c) for c in cands], [list(a) for a in alist]

    known = np.isfinite(chi)
    zone_sets = [None] * qv.size
    used_zones: list[tuple] = []
    if np.count_nonzero(known) >= 1 and all(cands[i] for i in np.flatnonzero(known)):
        idx = np.flatnonzero(known)
        tol = np.radians(angle_tolerance_deg)
        zones = [_parse_zone(zone)] if zone is not None else _default_zones()
        union = [set() for _ in idx]
        for z in zones:
            keep = _zone_consistent(np.radians(chi[idx]), [cands[i] for i in idx], z, tol)
            if all(keep):
                used_zones.append(z)
                for k, s in enumerate(keep):
                    union[k] |= {cands[idx[k]][j] for j in s}
        for k, i in enumerate(idx):
            zone_sets[i] = union[k]
    elif zone is not None:
        _parse_zone(zone)

    out = []
    for i, x in enumerate(qv):
        c, a, d = cands[i], alist[i], devs[i]
        zs = tuple(used_zones) if zone_sets[i] is not None else ()
        if not c:
            out.append(PeakAssignment(float(x), float(chi[i]), (), (), None, "unindexed",
                                      f"no fcc family implies a within {100 * tolerance:g} % of "
                                      f"{a_nominal:g} A.", zs))
            continue
        if zone_sets[i] is not None:
            allowed = [j for j, f in enumerate(c) if f in zone_sets[i]]
            if not allowed:
                where = f"zone {list(zone)}" if zone is not None else "any zone up to index 3"
                out.append(PeakAssignment(float(x), float(chi[i]), tuple(c), tuple(a), None, "unindexed",
                                          f"no candidate {[''.join(map(str, f)) for f in c]} fits the "
                                          f"azimuths in {where}.", zs))
                continue
            c2, a2 = [c[j] for j in allowed], [a[j] for j in allowed]
            if len(c2) == 1:
                out.append(PeakAssignment(float(x), float(chi[i]), tuple(c2), tuple(a2), c2[0], "indexed",
                                          "unique by q and azimuth in the zone", zs))
            else:
                out.append(PeakAssignment(float(x), float(chi[i]), tuple(c2), tuple(a2), None, "ambiguous",
                                          "several families fit q and the azimuths; give the zone axis "
                                          "or more peaks", zs))
            continue
        if len(c) == 1 or d[1] > ambiguity_ratio * d[0]:
            out.append(PeakAssignment(float(x), float(chi[i]), tuple(c), tuple(a), c[0], "indexed",
                                      "unique by q", zs))
        else:
            close = [j for j in range(len(c)) if d[j] <= ambiguity_ratio * d[0]]
            out.append(PeakAssignment(float(x), float(chi[i]), tuple(c[j] for j in close),
                                      tuple(a[j] for j in close), None, "ambiguous",
                                      "q alone cannot separate these families; give the peak's azimuth "
                                      "(--chi) and the zone axis (--zone)", zs))
    return out


def domain_lattice_constant(assignments: list[PeakAssignment]) -> tuple[float, float, int]:
    """``<a>`` and its standard deviation over the indexed peaks (Table S1).

    Parameters
    ----------
    assignments
        From `index_peaks`; ambiguous and unindexed peaks are left out.

    Returns
    -------
    (mean, std, n)
        Angstrom; ``std`` is the population standard deviation (ddof = 0), which reproduces
        Table S1's spreads (red: 151.4, 149.6 -> 150.5 +- 0.9); ``n`` peaks used.
        NaN when no peak is indexed.

    Notes
    -----
    Arithmetic mean and standard deviation. Validation: Table S1 red and orange rows.
    """
    a = np.array([p.lattice_constant for p in assignments if p.hkl is not None])
    if a.size == 0:
        return float("nan"), float("nan"), 0
    return float(a.mean()), float(a.std()), int(a.size)


def radial_peaks(q: np.ndarray, intensity: np.ndarray, *, q_range: tuple[float, float] = (0.06, 0.2),
                 prominence: float = 0.1, min_separation: float = 0.004) -> np.ndarray:
    """Positions (1/A) of the peaks of a radial profile, for `index_peaks`.

    Parameters
    ----------
    q
        Bin centres, 1/A.
    intensity
        Radial profile (any units), NaN where empty.
    q_range
        Range searched, 1/A.
    prominence
        Minimum peak prominence in ``log(I)`` (0.1: a 10 % bump; peaks sit on a steep
        form-factor decay, so they are found on ``log(I)`` minus a smooth trend).
    min_separation
        Minimum distance between peaks, 1/A.

    Returns
    -------
    numpy.ndarray
        Peak positions (parabolic interpolation of the top three bins), increasing.

    Notes
    -----
    scipy.signal.find_peaks on ``log I`` after removing a straight-line trend in ``log I``
    vs ``q`` (SAXS decays steeply). Validation: the synthetic profile in the tests.
    """
    from scipy.signal import find_peaks

    q_range = q_interval(q_range, "q_range", example="0.06,0.2")
    prominence = finite_number(prominence, "prominence", ge=0.0, unit="in log(I)", example="0.1")
    min_separation = finite_number(min_separation, "min_separation", ge=0.0, unit="1/A", example="0.004")
    q = np.asarray(q, float)
    y = np.asarray(intensity, float)
    sel = (q >= q_range[0]) & (q <= q_range[1]) & np.isfinite(y) & (y > 0)
    if np.count_nonzero(sel) < 5:
        raise ValueError(f"the radial profile has {np.count_nonzero(sel)} positive, finite bins in "
                         f"q_range {q_range} 1/A (need >= 5): the SAXS ring region is empty or masked.")
    qs, ly = q[sel], np.log(y[sel])
    trend = np.polyval(np.polyfit(qs, ly, 2), qs)
    r = ly - trend
    dq = float(np.median(np.diff(qs)))
    idx, _ = find_peaks(r, prominence=prominence, distance=max(1, int(min_separation / dq)))
    out = []
    for i in idx:
        if 0 < i < qs.size - 1:
            y0, y1, y2 = r[i - 1], r[i], r[i + 1]
            den = y0 - 2 * y1 + y2
            shift = 0.5 * (y0 - y2) / den if den != 0 else 0.0
            out.append(qs[i] + np.clip(shift, -0.5, 0.5) * dq)
        else:
            out.append(qs[i])
    return np.asarray(out)


def format_assignments(assignments: list[PeakAssignment], a_nominal: float = 150.0) -> str:
    """A text table like Table S1 (q, hkl, a per peak, then <a> +- std)."""
    lines = [f"{'q (1/A)':>8} {'chi':>7} {'hkl':>6} {'a (A)':>7}  status / candidates"]
    for p in assignments:
        chi = "" if np.isnan(p.chi_deg) else f"{p.chi_deg:7.1f}"
        if p.hkl is not None:
            lines.append(f"{p.q:8.4f} {chi:>7} {''.join(map(str, p.hkl)):>6} {p.lattice_constant:7.1f}  {p.status}")
        else:
            alts = ", ".join(f"{''.join(map(str, c))} (a = {a:.1f} A)"
                             for c, a in zip(p.candidates, p.lattice_constants))
            lines.append(f"{p.q:8.4f} {chi:>7} {'?':>6} {'':>7}  {p.status}: {alts or p.reason}")
    mean, std, n = domain_lattice_constant(assignments)
    lines.append(f"<a> = {mean:.1f} +- {std:.1f} A over {n} indexed peaks (population std; "
                 f"ambiguous peaks left out)")
    return "\n".join(lines)
