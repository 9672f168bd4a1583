"""The digital-twin sample: a map of superlattice domains with known ground truth.

A twin TOML (``configs/twin.toml``) describes a rectangular scan over a film of PbS
nanocrystal superlattices: the scan raster, the beam footprint, the domains (each one of the
paper's domain TOML files, placed as a disc with a rough outline), empty holes, overlap
patches where a second orientation lies in the beam, the boundary rule and the scattering
efficiencies that turn the stated flux into counts. `load_twin` reads it into a `TwinSample`;
`point_truth` gives the per-point ground truth and `point_params` the (one or two) weighted
`ModelParams` of the pattern at a scan point.

Frames and axes. Map coordinates are ``(y, x)`` in micrometres from the first scan point:
``y`` along the slow motor (scan rows), ``x`` along the fast motor (scan columns); scan point
``i = row * n_cols + col`` sits at ``(row * step_um, col * step_um)`` (``positions_um`` columns
are (slow, fast), as in `xmodel.dectris.write_scan`). The sample plane is normal to the beam:
map ``y`` is lab e1 (vertical), map ``x`` is lab e2 (horizontal), see docs/conventions.md.

Layout. Every domain ``d`` is a disc of radius ``r_d(phi) = radius_um * (1 + roughness *
sum_k c_k cos(k phi + phi_k) / k)`` (k = 2..5, seeded ``c_k ~ N(0, 1)``); where two discs
overlap the point belongs to the domain of smaller power distance ``|p - c_d|^2 - r_d^2``
(a power diagram: a straight grain boundary). Points in no disc, or in a ``[[hole]]``, are
empty. ``[[overlap]]`` discs add a second layer with another domain's orientation, holding
the area fraction ``fraction`` of the material there. The layout lives on a fine raster
(``scan.raster_um``); the beam (Gaussian, FWHM ``scan.beam_fwhm_um``) averages it into the
area fraction of every domain at every scan point.

Boundary rule. With ``e`` the distance (um) from a point to the nearest empty area and ``w``
the boundary width of its domain, ``s = clip(1 - e / w, 0, 1)`` (0 inside, 1 at the edge);
the lattice constant is ``a = a_d (1 - shrink_d * s)`` and the SL rotates out of plane by
``theta = tilt_d * s`` about the edge tangent ``t = (t_y, t_x)`` (in the sample plane):
``tilt1 = theta t_y``, ``tilt2 = theta t_x`` (first order in theta of a rotation about t).
A domain may instead give ``edge_tilt_deg = [tilt1, tilt2]`` at the edge (the orange
domain: 22 deg about [010]_SL, which the orange TOML puts along lab e2, plus a 7 deg tilt,
as scan S2 of the paper, Fig. 4 and S10). ``w``, ``shrink_d`` and ``tilt_d`` are drawn
uniformly from the ``[boundary]`` ranges with the seeded generator unless the domain fixes
them.

Counts. With ``N = flux_photons_per_s * exposure_s`` incident photons per frame, the model
scales are ``sl_scale = N * efficiency.sl_peak``, ``diffuse_scale = N * efficiency.diffuse``,
``al_scale = N * efficiency.al_peak`` (counts per pixel at unit solid angle, times the area
fraction of the component) and the background ``N * efficiency.background`` per pixel
everywhere, material or not. The shipped efficiencies (2e-6, 1.5e-8, 1.5e-9, 1.5e-11 per
photon at 1e10 photons/s and 0.3 s) give SL peaks of hundreds to thousands of counts and AL
peaks of a few counts per pixel, as in Fig. 1 of the paper.
"""
from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from xmodel import orientation
from xmodel.config import Config, load_config, parse_override
from xmodel.parameters import FWHM_PER_SIGMA, ModelParams, params_from_config

EXPERIMENT_TABLES = ("beam", "detector", "mask", "model")
TWIN_KEYS = {
    "": ("name", "seed", "experiment"),
    "scan": ("shape", "step_um", "beam_fwhm_um", "raster_um", "mixed_threshold", "empty_threshold",
             "min_fraction"),
    "efficiency": ("sl_peak", "diffuse", "al_peak", "background"),
    "boundary": ("width_um", "tilt_deg", "shrink", "roughness"),
}
ARRAY_TABLES = {
    "domain": ("file", "center_um", "radius_um", "inplane_deg", "edge_tilt_deg", "width_um",
               "tilt_deg", "shrink"),
    "hole": ("center_um", "radius_um"),
    "overlap": ("domain", "center_um", "radius_um", "fraction"),
}


class TwinError(ValueError):
    """A twin TOML file or override is missing, malformed or out of range."""


@dataclass(frozen=True, eq=False)
class Domain:
    """One domain of the twin: its sample config, placement and boundary rule.

    ``center_um`` is (y, x) in um; ``inplane_deg`` the SL in-plane angle (deg); ``width_um``
    the boundary width (um), ``shrink`` the relative lattice-constant drop at the edge,
    ``tilt_deg`` the out-of-plane rotation at the edge (deg) or ``edge_tilt_deg`` the explicit
    (tilt1, tilt2) at the edge (deg); ``harmonics`` (4, 2) the outline's (c_k, phi_k), k=2..5.
    """

    name: str
    config: Config
    center_um: tuple[float, float]
    radius_um: float
    inplane_deg: float
    width_um: float
    shrink: float
    tilt_deg: float
    edge_tilt_deg: tuple[float, float] | None
    harmonics: np.ndarray


@dataclass(frozen=True, eq=False)
class TwinSample:
    """A digital-twin sample read from TOML (see the module docstring for every rule).

    Attributes
    ----------
    name, seed : scan name (file stem of the output) and the seed of every random draw.
    path : the twin TOML file.
    shape : (rows, cols) of the scan raster; ``step_um`` its step (um).
    beam_fwhm_um : FWHM of the Gaussian beam footprint (um).
    raster_um : pixel size of the internal layout raster (um).
    roughness : relative amplitude of the domain outlines' wobble.
    photons : incident photons per frame, ``flux_photons_per_s * exposure_s``.
    efficiency : counts per pixel per incident photon for "sl_peak", "diffuse", "al_peak",
        "background".
    domains : the `Domain` list (label = index).
    holes, overlaps : dicts of the ``[[hole]]`` and ``[[overlap]]`` entries.
    mixed_threshold, empty_threshold, min_fraction : a point is mixed when its second
        component holds at least ``mixed_threshold`` of the beam, empty when all material
        holds less than ``empty_threshold``; components below ``min_fraction`` are dropped.
    label_raster : (H, W) int, domain label of each raster cell (-1 empty).
    overlap_raster : (H, W) int, label of the overlap layer (-1 none); ``overlap_fraction``
        (H, W) its area fraction.
    edge_distance : (H, W) distance to the nearest empty cell (um); ``edge_normal`` (2, H, W)
        its unit gradient (y, x).
    """

    name: str
    seed: int
    path: Path
    shape: tuple[int, int]
    step_um: float
    beam_fwhm_um: float
    raster_um: float
    roughness: float
    photons: float
    efficiency: dict
    domains: tuple[Domain, ...]
    holes: tuple[dict, ...]
    overlaps: tuple[dict, ...]
    mixed_threshold: float
    empty_threshold: float
    min_fraction: float
    label_raster: np.ndarray
    overlap_raster: np.ndarray
    overlap_fraction: np.ndarray
    edge_distance: np.ndarray
    edge_normal: np.ndarray

    @property
    def n_points(self) -> int:
        return int(self.shape[0] * self.shape[1])

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.domains)

    @property
    def configs(self) -> tuple[Config, ...]:
        """The resolved `Config` of every domain (experiment tables identical in all)."""
        return tuple(d.config for d in self.domains)

    def positions_um(self) -> np.ndarray:
        """(N, 2) scan positions (slow y, fast x) in um, row-major."""
        rows, cols = np.meshgrid(np.arange(self.shape[0]), np.arange(self.shape[1]), indexing="ij")
        return np.stack([rows.ravel(), cols.ravel()], axis=1) * self.step_um


# --------------------------------------------------------------------------- reading


def _fail(path, key: str, value, expected: str, fix: str = "") -> TwinError:
    return TwinError(f"{path}: {key} = {value!r} is invalid; expected {expected}.{(' ' + fix) if fix else ''}")


def _number(path, key, value, lo=None, hi=None, positive=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise _fail(path, key, value, "a finite number")
    if positive and value <= 0:
        raise _fail(path, key, value, "a number > 0")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _fail(path, key, value, f"a number in [{lo}, {hi}]")
    return float(value)


def _pair(path, key, value, lo=None, hi=None, ordered=False) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _fail(path, key, value, "a list of 2 numbers", "Write it as e.g. [1.0, 4.0].")
    out = tuple(_number(path, key, v, lo, hi) for v in value)
    if ordered and out[0] > out[1]:
        raise _fail(path, key, value, "a range [min, max] with min <= max")
    return out


def _apply_overrides(data: dict, overrides: Sequence[str], path: Path) -> list[str]:
    """Apply twin overrides to ``data``; return the experiment overrides for `load_config`."""
    experiment = []
    for text in overrides:
        table, key, value = parse_override(text)
        if table in EXPERIMENT_TABLES:
            experiment.append(text)
            continue
        if table not in TWIN_KEYS or key not in TWIN_KEYS[table]:
            valid = [f"{t}.{k}" if t else k for t, ks in TWIN_KEYS.items() for k in ks]
            raise TwinError(f"--set {text!r}: {table + '.' if table else ''}{key} is not a twin key of "
                            f"{path}; valid keys are {valid} and the experiment tables "
                            f"{list(EXPERIMENT_TABLES)}. Edit [[domain]], [[hole]] and [[overlap]] "
                            f"entries in the TOML file.")
        (data if table == "" else data.setdefault(table, {}))[key] = value
    return experiment


def _toml_value(value) -> str:
    return json.dumps(value)


def load_twin(path: str | Path, overrides: Sequence[str] = ()) -> TwinSample:
    """Read a twin TOML file (and ``--set table.key=value`` overrides) into a `TwinSample`.

    Parameters
    ----------
    path
        The twin TOML (e.g. ``configs/twin.toml``). Its ``experiment`` key and every domain
        ``file`` are resolved relative to it; its ``[beam]``, ``[detector]``, ``[mask]`` and
        ``[model]`` tables override the experiment file key by key.
    overrides
        ``"scan.shape=[4,4]"``, ``"seed=3"``, ``"beam.flux_photons_per_s=1e9"``...: twin keys
        (top level, ``[scan]``, ``[efficiency]``, ``[boundary]``) or experiment keys.

    Returns
    -------
    TwinSample
        With its layout rasters computed (deterministic for a given ``seed``).

    Raises
    ------
    TwinError
        Missing file, unknown table or key, a value of the wrong type or range, an unknown
        domain name; `xmodel.config.ConfigError` for bad experiment or domain files.

    Validation
    ----------
    tests/xmodel/test_twin.py: domain areas, boundary rule, empty and mixed points, errors.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise TwinError(f"Twin file {path} does not exist: pass a twin TOML such as configs/twin.toml.")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TwinError(f"{path} is not valid TOML: {exc}. Fix the line it names.") from None
    known = set(TWIN_KEYS[""]) | set(TWIN_KEYS) | set(ARRAY_TABLES) | set(EXPERIMENT_TABLES)
    for key, value in data.items():
        if key not in known:
            raise TwinError(f"{path}: unknown key or table {key!r}; valid ones are {sorted(known - {''})}.")
        if key in TWIN_KEYS and key != "":
            for sub in value:
                if sub not in TWIN_KEYS[key]:
                    raise TwinError(f"{path}: unknown key [{key}] {sub!r}; valid keys are "
                                    f"{list(TWIN_KEYS[key])}.")
        if key in ARRAY_TABLES:
            for entry in value:
                for sub in entry:
                    if sub not in ARRAY_TABLES[key]:
                        raise TwinError(f"{path}: unknown key {sub!r} in a [[{key}]] entry; valid "
                                        f"keys are {list(ARRAY_TABLES[key])}.")
    exp_overrides = _apply_overrides(data, overrides, path)
    base = path.parent
    exp_file = (base / data.get("experiment", "experiment/p10_eiger4m.toml")).resolve()
    for table in EXPERIMENT_TABLES:
        for key, value in data.get(table, {}).items():
            if key == "poni_file" and value:
                value = str((base / value).resolve())
            elif key == "files":
                value = [str((base / v).resolve()) for v in value]
            exp_overrides.insert(0, f"{table}.{key}={_toml_value(value)}")

    scan = data.get("scan", {})
    shape = scan.get("shape", [121, 121])
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)):
        raise _fail(path, "scan.shape", shape, "[rows, cols], two integers >= 1", "E.g. scan.shape=[121, 121].")
    step = _number(path, "scan.step_um", scan.get("step_um", 0.25), positive=True)
    fwhm = _number(path, "scan.beam_fwhm_um", scan.get("beam_fwhm_um", 0.4), positive=True)
    raster = _number(path, "scan.raster_um", scan.get("raster_um", 0.05), positive=True)
    bnd = data.get("boundary", {})
    width_range = _pair(path, "boundary.width_um", bnd.get("width_um", [1.0, 4.0]), 0, None, True)
    tilt_range = _pair(path, "boundary.tilt_deg", bnd.get("tilt_deg", [8.0, 14.0]), -90, 90, True)
    shrink_range = _pair(path, "boundary.shrink", bnd.get("shrink", [0.05, 0.13]), 0, 0.9, True)
    roughness = _number(path, "boundary.roughness", bnd.get("roughness", 0.05), 0, 0.5)
    eff = {k: _number(path, f"efficiency.{k}", data.get("efficiency", {}).get(k, d), lo=0)
           for k, d in (("sl_peak", 2e-6), ("diffuse", 1.5e-8), ("al_peak", 1.5e-9), ("background", 1.5e-11))}
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _fail(path, "seed", seed, "an integer >= 0")
    rng = np.random.default_rng(seed)

    entries = data.get("domain", [])
    if not entries:
        raise TwinError(f"{path}: no [[domain]] entries; add at least one, e.g. [[domain]] "
                        f'file = "domains/red.toml", center_um = [8.0, 8.0], radius_um = 5.0.')
    domains = []
    for k, entry in enumerate(entries):
        where = f"[[domain]] #{k + 1}"
        if "file" not in entry:
            raise TwinError(f"{path}: {where} has no 'file'; name a domain TOML, e.g. file = \"domains/red.toml\".")
        cfg = load_config([exp_file, (base / entry["file"]).resolve()], exp_overrides)
        harmonics = np.stack([rng.standard_normal(4), rng.uniform(0, 2 * np.pi, 4)], axis=1)
        draws = (rng.uniform(*width_range), rng.uniform(*shrink_range), rng.uniform(*tilt_range))
        edge = entry.get("edge_tilt_deg")
        domains.append(Domain(
            name=cfg.name, config=cfg,
            center_um=_pair(path, f"{where} center_um", entry.get("center_um")),
            radius_um=_number(path, f"{where} radius_um", entry.get("radius_um"), positive=True),
            inplane_deg=_number(path, f"{where} inplane_deg",
                                entry.get("inplane_deg", cfg.superlattice.inplane_deg)),
            width_um=_number(path, f"{where} width_um", entry.get("width_um", draws[0]), positive=True),
            shrink=_number(path, f"{where} shrink", entry.get("shrink", draws[1]), 0, 0.9),
            tilt_deg=_number(path, f"{where} tilt_deg", entry.get("tilt_deg", draws[2]), -90, 90),
            edge_tilt_deg=None if edge is None else _pair(path, f"{where} edge_tilt_deg", edge, -90, 90),
            harmonics=harmonics))
    names = [d.name for d in domains]
    holes = tuple({"center_um": _pair(path, f"[[hole]] #{k + 1} center_um", h.get("center_um")),
                   "radius_um": _number(path, f"[[hole]] #{k + 1} radius_um", h.get("radius_um"), positive=True)}
                  for k, h in enumerate(data.get("hole", [])))
    overlaps = []
    for k, o in enumerate(data.get("overlap", [])):
        if o.get("domain") not in names:
            raise _fail(path, f"[[overlap]] #{k + 1} domain", o.get("domain"), f"one of the domain names {names}")
        overlaps.append({"domain": o["domain"], "label": names.index(o["domain"]),
                         "center_um": _pair(path, f"[[overlap]] #{k + 1} center_um", o.get("center_um")),
                         "radius_um": _number(path, f"[[overlap]] #{k + 1} radius_um", o.get("radius_um"), positive=True),
                         "fraction": _number(path, f"[[overlap]] #{k + 1} fraction", o.get("fraction", 0.5), 0, 1)})
    beam = domains[0].config.beam
    fields = dict(
        name=str(data.get("name", path.stem)), seed=seed, path=path, shape=(shape[0], shape[1]),
        step_um=step, beam_fwhm_um=fwhm, raster_um=raster, roughness=roughness,
        photons=beam.flux_photons_per_s * beam.exposure_s, efficiency=eff, domains=tuple(domains),
        holes=holes, overlaps=tuple(overlaps),
        mixed_threshold=_number(path, "scan.mixed_threshold", scan.get("mixed_threshold", 0.1), 0, 0.5),
        empty_threshold=_number(path, "scan.empty_threshold", scan.get("empty_threshold", 0.05), 0, 1),
        min_fraction=_number(path, "scan.min_fraction", scan.get("min_fraction", 0.02), 0, 0.5))
    return TwinSample(**fields, **_layout(fields))


# --------------------------------------------------------------------------- layout


def _layout(f: dict) -> dict:
    """Label, overlap and edge-distance rasters (see the module docstring)."""
    r = f["raster_um"]
    extent = (np.asarray(f["shape"]) - 1) * f["step_um"]
    pad = 2.0 * f["beam_fwhm_um"]
    ny, nx = (np.ceil((extent + 2 * pad) / r).astype(int) + 1)
    y = np.arange(ny)[:, None] * r - pad
    x = np.arange(nx)[None, :] * r - pad
    best = np.full((ny, nx), np.inf)
    label = np.full((ny, nx), -1)
    for k, d in enumerate(f["domains"]):
        dy, dx = y - d.center_um[0], x - d.center_um[1]
        phi = np.arctan2(dy, dx)
        wobble = sum(c * np.cos(n * phi + p) / n for n, (c, p) in zip(range(2, 6), d.harmonics))
        radius = d.radius_um * (1.0 + f["roughness"] * wobble)
        rho2 = dy ** 2 + dx ** 2
        power = rho2 - radius ** 2
        take = (rho2 <= radius ** 2) & (power < best)
        best = np.where(take, power, best)
        label = np.where(take, k, label)
    for h in f["holes"]:
        label[(y - h["center_um"][0]) ** 2 + (x - h["center_um"][1]) ** 2 <= h["radius_um"] ** 2] = -1
    over = np.full((ny, nx), -1)
    frac = np.zeros((ny, nx))
    for o in f["overlaps"]:
        inside = ((y - o["center_um"][0]) ** 2 + (x - o["center_um"][1]) ** 2 <= o["radius_um"] ** 2) & (label >= 0)
        inside &= label != o["label"]
        over = np.where(inside, o["label"], over)
        frac = np.where(inside, o["fraction"], frac)
    dist = ndimage.distance_transform_edt(label >= 0) * r
    gy, gx = np.gradient(ndimage.gaussian_filter(dist, 2.0), r)
    norm = np.maximum(np.hypot(gy, gx), 1e-12)
    return dict(label_raster=label, overlap_raster=over, overlap_fraction=frac, edge_distance=dist,
                edge_normal=np.stack([gy / norm, gx / norm]))


def _raster_index(sample: TwinSample, positions_um: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pad = 2.0 * sample.beam_fwhm_um
    iy = np.rint((positions_um[:, 0] + pad) / sample.raster_um).astype(int)
    ix = np.rint((positions_um[:, 1] + pad) / sample.raster_um).astype(int)
    return iy, ix


def beam_fractions(sample: TwinSample) -> np.ndarray:
    """(N, n_domains) area fraction of each domain's material in the beam at each scan point.

    Notes
    -----
    The layout raster weighted by a Gaussian beam profile of FWHM ``beam_fwhm_um``
    (sigma = FWHM / 2.3548); a base layer holds ``1 - fraction`` of the material where an
    overlap layer holds ``fraction``. Rows sum to the material fraction (<= 1; 1 - sum is empty).
    """
    sigma = sample.beam_fwhm_um / FWHM_PER_SIGMA / sample.raster_um
    iy, ix = _raster_index(sample, sample.positions_um())
    out = np.zeros((sample.n_points, len(sample.domains)))
    for k in range(len(sample.domains)):
        layer = np.where(sample.label_raster == k, 1.0 - sample.overlap_fraction, 0.0)
        layer += np.where(sample.overlap_raster == k, sample.overlap_fraction, 0.0)
        out[:, k] = ndimage.gaussian_filter(layer, sigma, mode="constant", truncate=3.0)[iy, ix]
    return np.clip(out, 0.0, 1.0)


# --------------------------------------------------------------------------- per point


@dataclass(frozen=True)
class Components:
    """The (up to two) scattering components of every scan point, strongest first.

    All arrays have shape (N, 2): ``label`` (-1 where there is no component), ``weight``
    (area fraction in the beam), ``lattice_constant`` (A), ``tilt1``, ``tilt2`` (rad); and
    (N,): ``material`` (material fraction in the beam), ``edge_distance_um``, ``edge_s``
    (the boundary coordinate s in [0, 1]).
    """

    label: np.ndarray
    weight: np.ndarray
    lattice_constant: np.ndarray
    tilt1: np.ndarray
    tilt2: np.ndarray
    material: np.ndarray
    edge_distance_um: np.ndarray
    edge_s: np.ndarray


def components(sample: TwinSample) -> Components:
    """Per-point components from the layout, the beam footprint and the boundary rule.

    Notes
    -----
    Boundary rule of the module docstring, evaluated at the beam centre of each point with
    the parameters of each component's own domain.
    """
    frac = beam_fractions(sample)
    if frac.shape[1] == 1:          # one domain: a zero second column keeps (N, 2) components
        frac = np.concatenate([frac, np.zeros_like(frac)], axis=1)
    n = sample.n_points
    order = np.argsort(-frac, axis=1, kind="stable")[:, :2]
    weight = np.take_along_axis(frac, order, axis=1)
    material = frac.sum(axis=1)
    label = np.where(weight >= max(sample.min_fraction, 1e-12), order, -1)
    label[material < sample.empty_threshold] = -1
    weight = np.where(label >= 0, weight, 0.0)
    iy, ix = _raster_index(sample, sample.positions_um())
    e = sample.edge_distance[iy, ix]
    ny, nx = sample.edge_normal[0][iy, ix], sample.edge_normal[1][iy, ix]
    ty, tx = -nx, ny  # edge tangent (y, x), in the sample plane
    a = np.full((n, 2), np.nan)
    t1 = np.zeros((n, 2))
    t2 = np.zeros((n, 2))
    s_all = np.zeros(n)
    for k, d in enumerate(sample.domains):
        s = np.clip(1.0 - e / d.width_um, 0.0, 1.0)
        sel = label == k
        rows = np.nonzero(sel)[0]
        a[sel] = (d.config.superlattice.lattice_constant * (1.0 - d.shrink * s))[rows]
        # the domain's own (bulk) tilt, e.g. red's, plus the boundary rotation toward the edge
        base1 = np.radians(d.config.superlattice.tilt1_deg)
        base2 = np.radians(d.config.superlattice.tilt2_deg)
        if d.edge_tilt_deg is not None:
            t1[sel] = base1 + np.radians(d.edge_tilt_deg[0]) * s[rows]
            t2[sel] = base2 + np.radians(d.edge_tilt_deg[1]) * s[rows]
        else:
            theta = np.radians(d.tilt_deg) * s
            t1[sel] = base1 + (theta * ty)[rows]
            t2[sel] = base2 + (theta * tx)[rows]
        first = label[:, 0] == k
        s_all[first] = s[first]
    return Components(label=label, weight=weight, lattice_constant=a, tilt1=t1, tilt2=t2,
                      material=material, edge_distance_um=e, edge_s=s_all)


def domain_params(sample: TwinSample, k: int, dtype=jnp.float32) -> ModelParams:
    """`ModelParams` of domain ``k`` in its interior, with the twin's scales.

    ``sl_scale``, ``diffuse_scale`` and ``al_scale`` are the incident photons per frame times
    the ``[efficiency]`` values (counts per pixel at unit solid angle); the background is 0
    (it is added once per frame, see `background_counts`); the in-plane angle is the twin's.
    """
    d = sample.domains[k]
    eff = sample.efficiency
    return params_from_config(d.config, dtype=dtype).replace(
        sl_scale=sample.photons * eff["sl_peak"], diffuse_scale=sample.photons * eff["diffuse"],
        al_scale=sample.photons * eff["al_peak"], background=0.0, inplane=np.radians(d.inplane_deg))


def background_counts(sample: TwinSample) -> float:
    """Background per pixel at unit solid angle (counts per frame), material or not."""
    return sample.photons * sample.efficiency["background"]


def point_params(sample: TwinSample, i: int, comps: Components | None = None) -> list[tuple[float, ModelParams]]:
    """Weights and `ModelParams` of the (zero, one or two) components of scan point ``i``.

    The expected frame is ``background_counts(sample) * w_pixel + sum_c weight_c *
    model(params_c)`` with ``w_pixel`` the solid angle x polarization; an empty point has
    no component. Pass ``comps = components(sample)`` when calling for many points.
    """
    if not 0 <= int(i) < sample.n_points:
        raise IndexError(f"scan point {i} is outside the twin's {sample.n_points} points "
                         f"({sample.shape[0]} x {sample.shape[1]}); use 0 <= i < {sample.n_points}.")
    c = comps or components(sample)
    out = []
    for j in range(2):
        k = int(c.label[i, j])
        if k < 0:
            continue
        p = domain_params(sample, k).replace(lattice_constant=c.lattice_constant[i, j],
                                             tilt1=c.tilt1[i, j], tilt2=c.tilt2[i, j])
        out.append((float(c.weight[i, j]), p))
    return out


#: units and descriptions of the truth datasets (written to truth.h5)
TRUTH_UNITS = {
    "label": ("", "domain label of the strongest component (index into label_names), -1 empty"),
    "orientation_matrix": ("", "SL crystal -> lab rotation of the strongest component (N, 3, 3)"),
    "lattice_constant": ("angstrom", "SL lattice constant of the strongest component"),
    "tilt_deg": ("degree", "out-of-plane rotation hypot(tilt1, tilt2) of the strongest component"),
    "tilt1_deg": ("degree", "SL tilt about lab e1"),
    "tilt2_deg": ("degree", "SL tilt about lab e2"),
    "inplane_deg": ("degree", "SL in-plane angle about the beam"),
    "disorder_deg": ("degree", "NC orientational disorder dPhi (FWHM, Eq. 7)"),
    "configuration": ("", "NC orientation relationship (conf1, conf2, custom; '' empty)"),
    "empty": ("", "no material in the beam (background only)"),
    "mixed": ("", "a second orientation holds at least mixed_threshold of the beam"),
    "fraction": ("", "area fraction of the strongest component in the beam"),
    "second_label": ("", "domain label of the second component, -1 none"),
    "second_fraction": ("", "area fraction of the second component in the beam"),
    "material_fraction": ("", "area fraction of material (any domain) in the beam"),
    "boundary_distance_um": ("um", "distance from the beam centre to the nearest empty area"),
    "boundary_s": ("", "boundary coordinate s = clip(1 - distance / width, 0, 1)"),
    "positions_um": ("um", "scan positions (slow y, fast x)"),
    "expected_counts": ("counts", "expected total counts of the frame on valid pixels (synth only)"),
    "sl_snr": ("", "expected chi^2 gain of the SL peaks, sum s^2 / mu over valid pixels (s: SL peaks alone, "
                   "mu: whole frame; synth only, xmodel.synth.expected_frames)"),
    "sl_visible": ("", "the SL peaks stand above the noise: sqrt(sl_snr) >= xmodel.synth.SL_VISIBLE_SNR "
                       "(synth only)"),
}


def point_truth(sample: TwinSample, comps: Components | None = None) -> dict[str, np.ndarray]:
    """Ground truth of every scan point (keys and units: `TRUTH_UNITS`, plus ``label_names``).

    Orientation, lattice constant, tilt, in-plane angle, disorder and configuration are those
    of the strongest component (NaN / "" at empty points).

    Validation
    ----------
    tests/xmodel/test_twin.py (fractions, boundary rule, empty and mixed flags).
    """
    c = comps or components(sample)
    lab = c.label[:, 0]
    has = lab >= 0
    bases = np.stack([np.asarray(domain_params(sample, k).base_orientation, np.float64)
                      for k in range(len(sample.domains))])
    inplane = np.array([d.inplane_deg for d in sample.domains])
    disorder = np.array([d.config.atomic_lattice.disorder_fwhm_deg for d in sample.domains])
    confs = np.array([d.config.atomic_lattice.configuration for d in sample.domains])
    safe = np.where(has, lab, 0)
    rot = np.asarray(orientation.sl_orientation(bases[safe], np.radians(inplane[safe]),
                                                c.tilt1[:, 0], c.tilt2[:, 0]), np.float64)
    nan = np.where(has, 1.0, np.nan)
    return {
        "label": lab.astype(np.int32),
        "label_names": np.array(sample.label_names),
        "orientation_matrix": rot * nan[:, None, None],
        "lattice_constant": c.lattice_constant[:, 0],
        "tilt_deg": np.degrees(np.hypot(c.tilt1[:, 0], c.tilt2[:, 0])) * nan,
        "tilt1_deg": np.degrees(c.tilt1[:, 0]) * nan,
        "tilt2_deg": np.degrees(c.tilt2[:, 0]) * nan,
        "inplane_deg": inplane[safe] * nan,
        "disorder_deg": disorder[safe] * nan,
        "configuration": np.where(has, confs[safe], ""),
        "empty": ~has,
        "mixed": has & (c.label[:, 1] >= 0) & (c.weight[:, 1] >= sample.mixed_threshold),
        "fraction": c.weight[:, 0],
        "second_label": c.label[:, 1].astype(np.int32),
        "second_fraction": c.weight[:, 1],
        "material_fraction": c.material,
        "boundary_distance_um": c.edge_distance_um,
        "boundary_s": c.edge_s,
        "positions_um": sample.positions_um(),
    }
