"""The realistic-twin TOML: which twin layout to render and how the real-space simulator works.

A realistic-twin file names a twin TOML (`xmodel.twin`: layout, domains, boundary rule,
efficiencies) and adds the tables of the real-space simulator::

    twin = "twin.toml"                 # relative to this file
    set = ["scan.shape=[21, 21]"]      # overrides of the twin, as `--set`
    name = "twin_realistic"            # output name (default: this file's stem)

    [grains]        count, diameter_A, displacement, displacement_model, edge, mosaic_deg
    [nanocrystals]  sampled, shape_cutoff, radius_step_A
    [saxs]          q_max, q_max_incoherent
    [waxs]          binning
    [nuisance]      membrane, air, shadow_radius_px, shadow_edge_px, streak_counts,
                    streak_angle_deg, streak_width_px, streak_length_px, flux_drift,
                    flux_period_frames, flux_jitter, hot_pixels, dead_pixels, hot_counts

Every key, its unit and default is in `DEFAULTS`; docs/realspace.md explains each. ``--set``
overrides (`load_settings`) reach both: ``grains.mosaic_deg=0`` sets a key of these tables,
``scan.shape=[5,5]`` one of the twin.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from xmodel.config import ConfigError, parse_override
from xmodel.realspace.particles import DISPLACEMENTS, EDGES

__all__ = ["DEFAULTS", "RealspaceError", "RealspaceSettings", "load_settings"]


class RealspaceError(ValueError):
    """A realistic-twin TOML is missing, malformed or out of range."""


#: table -> key -> (default, lower bound, upper bound or None, unit / meaning)
DEFAULTS: dict[str, dict[str, tuple]] = {
    "grains": {
        "count": (3, 1, 64, "coherent SL grains per component in the beam, summed incoherently"),
        "diameter_A": ([900.0, 1300.0], 200.0, 5000.0, "range of grain diameters (A), drawn uniformly"),
        "displacement": (0.03, 0.0, 0.2, "rms NC displacement per component / NN distance"),
        "displacement_model": ("cumulative", None, None, '"gaussian" or "cumulative" (paracrystal)'),
        "edge": ("sharp", None, None, ('"sharp" (a sphere) or "gaussian" (a diffuse boundary of the same '
                                       'radius of gyration, no Porod tails; xmodel.realspace.particles.fcc_grain)')),
        "mosaic_deg": (0.5, 0.0, 10.0, "sd of each grain's rotation vector about the domain orientation (deg)"),
    },
    "nanocrystals": {
        "sampled": (4096, 1, 100000, "NCs drawn per component and frame for the WAXS"),
        "shape_cutoff": (0.25, 0.05, 1.0, "WAXS shape transforms evaluated within this |q - G| (1/A)"),
        "radius_step_A": (0.25, 0.0, 5.0, "NC radii are multiples of this (A)"),
    },
    "saxs": {
        "q_max": (0.25, 0.01, 2.0, "coherent sum over NCs on pixels with |q| <= q_max (1/A)"),
        "q_max_incoherent": (0.5, 0.01, 3.0, "incoherent NC scattering out to this |q| (1/A)"),
    },
    "waxs": {
        "binning": (4, 1, 16, "WAXS computed on the detector binned by this factor, then interpolated"),
    },
    "nuisance": {
        "membrane": (0.8, 0.0, None, "Si3N4 membrane, in units of the twin's background at q = 2 1/A"),
        "air": (0.2, 0.0, None, "air scattering, in units of the twin's background at q = 2 1/A"),
        "shadow_radius_px": (13.0, 0.0, None, "beamstop shadow radius (pixels)"),
        "shadow_edge_px": (1.5, 0.0, None, "width of the shadow's soft edge (pixels)"),
        "streak_counts": (30.0, 0.0, None, "parasitic streak, counts per pixel at the beam centre"),
        "streak_angle_deg": (0.0, -360.0, 360.0, "direction of the streak (deg, 0 = +col, 90 = +row)"),
        "streak_width_px": (2.0, 0.1, None, "Gaussian sigma of the streak across (pixels)"),
        "streak_length_px": (40.0, 0.1, None, "decay length of the streak along (pixels)"),
        "flux_drift": (0.05, 0.0, 0.9, "relative amplitude of the slow flux drift"),
        "flux_period_frames": (150.0, 1.0, None, "period of the flux drift (frames)"),
        "flux_jitter": (0.01, 0.0, 0.5, "relative frame-to-frame flux jitter (sd)"),
        "hot_pixels": (5, 0, 10000, "hot pixels (counts hot_counts in every frame)"),
        "dead_pixels": (20, 0, 100000, "dead pixels (0 counts)"),
        "hot_counts": (5000.0, 0.0, None, "mean counts of a hot pixel per frame"),
    },
}
TOP_KEYS = ("twin", "set", "name")


@dataclass(frozen=True)
class RealspaceSettings:
    """A parsed realistic-twin file: the twin it renders and the simulator's settings."""

    path: Path
    twin: Path
    overrides: tuple[str, ...]
    name: str
    values: dict = field(default_factory=dict)

    def __getitem__(self, key: str):
        table, name = key.split(".")
        return self.values[table][name]


def _check(path: Path, table: str, key: str, value, origin: str = ""):
    default, lo, hi, meaning = DEFAULTS[table][key]
    where = f"{path}: [{table}] {key} = {value!r}{origin}"
    choices = {"displacement_model": DISPLACEMENTS, "edge": EDGES}.get(key)
    if choices is not None:
        if value not in choices:
            expected = " or ".join('"' + c + '"' for c in choices)
            raise RealspaceError(f"{where} is invalid; expected {expected}.")
        return value
    if isinstance(default, list):
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                or value[0] > value[1] or value[0] < lo or value[1] > hi):
            raise RealspaceError(f"{where} is invalid; expected [min, max] with {lo} <= min <= max <= {hi} "
                                 f"({meaning}).")
        return [float(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RealspaceError(f"{where} is invalid; expected a number ({meaning}).")
    if isinstance(default, int) and not isinstance(value, int):
        raise RealspaceError(f"{where} is invalid; expected an integer ({meaning}).")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise RealspaceError(f"{where} is out of range; expected a value {rng} ({meaning}).")
    return value


def load_settings(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> RealspaceSettings:
    """Read and check a realistic-twin TOML (module docstring).

    Parameters
    ----------
    path
        The realistic-twin TOML (e.g. ``configs/twin_realistic.toml``).
    overrides
        ``--set`` strings, ``"table.key=value"``: those of the simulator's tables (`DEFAULTS`,
        e.g. ``grains.mosaic_deg=0``) replace the file's value and are checked as it is; the
        others are appended to the twin's overrides (``settings.overrides``, after the file's
        ``set`` list) and checked by `xmodel.twin.load_twin`.

    Raises
    ------
    RealspaceError
        Missing file or twin, invalid TOML, an unknown table or key, a value of the wrong
        type or range; the message names the file (or the ``--set``), the key and what is
        expected.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise RealspaceError(f"Realistic-twin file {path} does not exist: pass e.g. configs/twin_realistic_demo.toml.")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RealspaceError(f"{path} is not valid TOML: {exc}. Fix the line it names.") from None
    for key in data:
        if key not in TOP_KEYS and key not in DEFAULTS:
            raise RealspaceError(f"{path}: unknown key or table {key!r}; valid ones are "
                                 f"{list(TOP_KEYS) + list(DEFAULTS)}. A twin TOML (configs/twin.toml) is "
                                 f"rendered by the default engine, or named by a realistic-twin file's twin key "
                                 f"(configs/twin_realistic.toml).")
    if "twin" not in data or not isinstance(data["twin"], str):
        raise RealspaceError(f'{path}: the key twin is missing or not a string; name the twin layout it renders, '
                             f'e.g. twin = "twin.toml".')
    twin = (path.parent / data["twin"]).resolve()
    if not twin.is_file():
        raise RealspaceError(f"{path}: twin = {data['twin']!r} names {twin}, which does not exist.")
    file_set = data.get("set", [])
    if not isinstance(file_set, list) or not all(isinstance(s, str) for s in file_set):
        raise RealspaceError(f'{path}: set = {file_set!r} is invalid; expected a list of "table.key=value" strings.')
    values = {}
    for table, keys in DEFAULTS.items():
        given = data.get(table, {})
        for key in given:
            if key not in keys:
                raise RealspaceError(f"{path}: unknown key [{table}] {key!r}; valid keys are {list(keys)}.")
        values[table] = {k: _check(path, table, k, given[k]) if k in given else d[0] for k, d in keys.items()}
    twin_overrides = list(file_set)
    for text in overrides:
        try:
            table, key, value = parse_override(text)
        except ConfigError as exc:
            raise RealspaceError(str(exc)) from None
        if table not in DEFAULTS:
            twin_overrides.append(text)
            continue
        if key not in DEFAULTS[table]:
            raise RealspaceError(f"--set {text!r}: unknown key [{table}] {key!r} of the real-space simulator; "
                                 f"valid keys are {list(DEFAULTS[table])}.")
        values[table][key] = _check(path, table, key, value, f" (from --set {text!r})")
    name = data.get("name", path.stem)
    return RealspaceSettings(path=path, twin=twin, overrides=tuple(twin_overrides), name=str(name), values=values)
