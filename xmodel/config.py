"""Experiment and sample configuration: TOML files and ``--set`` overrides -> a validated `Config`.

Files are merged in the order given (the experiment first, then the sample); a later file
overrides an earlier one key by key inside each table. ``--set table.key=value`` overrides are
applied last; their values are parsed as TOML, and a bare word (``conf1``) is read as a string.
Every value is checked (type, length, range) and every error is a `ConfigError` that names the
key, the file (or ``--set``) it came from, what was found and what is expected.

Units follow ``docs/conventions.md`` at the edge: Angstrom and 1/Angstrom for crystallography,
metres for the detector distance, pixels for beam centre and masks, degrees with ``_deg`` in the
name. Paths (``detector.poni_file``, ``mask.files``) are resolved relative to the TOML file that
names them (relative to the working directory for ``--set``).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any



def _config_dir() -> Path:
    """The shipped configs: package data ``xmodel/configs`` of an installed wheel
    (`importlib.resources`), else the repository's top-level ``configs/`` (a source checkout or
    an editable install, where the files are edited)."""
    from importlib.resources import files

    packaged = Path(str(files("xmodel").joinpath("configs")))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "configs"


#: folder of the shipped configs (`shipped_config` finds one by name)
CONFIG_DIR = _config_dir()
EXPERIMENT_TOML = CONFIG_DIR / "experiment" / "p10_eiger4m.toml"
DOMAINS = ("red", "purple", "yellow", "green", "orange")
KNOWN_DETECTORS = ("Eiger4M",)
CONFIGURATIONS = ("conf1", "conf2", "custom")
#: the same tuple as `xmodel.form_factor.SL_PEAK_WEIGHTINGS` (kept here: no JAX at the TOML edge)
SL_PEAK_WEIGHTINGS = ("decoupling", "average")
#: the default of ``model.sl_peak_weighting``. The physics (decoupling approximation) and the
#: real-space simulator say "decoupling"; "average" stays the default until the scan fit's
#: search is robust to it (the orange Conf2 frame of the scan-fit tests, tests/fits/scan/test_driver.py,
#: fitted 37 deg off for 2 of 3 noise draws under either weighting). On Gaussian-model frames the
#: search alone does as well with it (benchmarks/search_candidates.py, docs/validation.md "The
#: physics defaults and the search"). With it alone three tests fail: XCCA on the purple domain
#: (its 311_SL ring at 0.139 1/A, next to the zero of ``|<F>|^2``, keeps 0.36 of its ``<|F|^2>``
#: weight, where the paper's Fig. 2c shows 311_SL maxima) and the driver's refined NC misorientation.
DEFAULT_SL_PEAK_WEIGHTING = "average"
#: the same tuple as `xmodel.pattern.SL_PEAK_SHAPES`: "mosaic" (the peaks of earlier versions: the
#: height whatever the widths), "crystal" (size, mosaic and paracrystal broadening, integrated
#: intensity kept) or "grain" ("crystal" with the profile across the Ewald sphere that the grain's
#: size and mosaic give, `xmodel.pattern.grain_across`)
SL_PEAK_SHAPES = ("mosaic", "crystal", "grain")
#: the default of ``model.sl_peak_shape``. The physics says "crystal" (each reflection keeps its
#: kinematic integrated intensity whatever its widths, as the AL peaks do with
#: ``model.al_peak_intensity = "integrated"``), and it fits the real-space twin better; "mosaic" stays
#: the default until the scan fit's template search is robust to it: with "crystal" the search
#: puts the true orientation among its candidates on fewer orange frames
#: (benchmarks/search_candidates.py) and ten tests of the search, the driver, the domain fit, the
#: mixed test and XCCA fail (docs/validation.md, "The physics defaults and the search")
DEFAULT_SL_PEAK_SHAPE = "mosaic"
#: the same tuple as `xmodel.pattern.AL_PEAK_INTENSITIES`: "integrated" (the default: each AL
#: reflection's integral over reciprocal space follows ``|F|^2`` whatever its widths) or "height" (the
#: peak heights follow ``|F|^2``, the model of earlier versions)
AL_PEAK_INTENSITIES = ("integrated", "height")
#: the default of ``model.form_factor_nsigma`` (the model's truncation of the Gaussian radius
#: distribution). `xmodel.form_factor.sphere_form_factor` converges at 6 sigma (its own default);
#: the model stays at sasmodels' 3-sigma cut for now because the scan fit's template search is
#: not robust to that 1.8 % change of P(q) near its first minimum: with 6 sigma the search's first
#: match of an orange test frame and of a compressed, tilted frame (tests/fits/scan/test_search.py)
#: lands on an alias 24-33 deg off. Set it to 6 in a [model] table for the converged average.
DEFAULT_MODEL_FORM_FACTOR_NSIGMA = 3.0
MASK_SUFFIXES = (".npy", ".h5", ".hdf5", ".edf", ".tif", ".tiff")
PONI_GEOMETRY_KEYS = ("distance_m", "beam_center_px", "rot1_deg", "rot2_deg", "rot3_deg")


class ConfigError(ValueError):
    """A configuration file or ``--set`` override is missing, malformed or out of range."""


@dataclass(frozen=True)
class Check:
    """What one TOML key accepts; stored in each dataclass field's metadata.

    ``kind`` is one of number, integer, string, boolean, choice, vector, path, paths, pairs.
    """

    kind: str
    unit: str = ""
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    length: int = 3
    nonzero: bool = False
    choices: tuple[str, ...] = ()

    def expected(self) -> str:
        """Describe the accepted values in words, for error messages."""
        bounds = []
        if self.gt is not None and self.le is not None:
            bounds = [f"in ({self.gt:g}, {self.le:g}]"]
        elif self.gt is not None:
            bounds.append(f"> {self.gt:g}")
        if self.ge is not None and self.le is not None:
            bounds = [f"in [{self.ge:g}, {self.le:g}]"]
        elif self.ge is not None:
            bounds.append(f">= {self.ge:g}")
        elif self.le is not None and self.gt is None:
            bounds.append(f"<= {self.le:g}")
        text = {
            "number": "a finite number (int or float)",
            "integer": "an integer",
            "string": "a string",
            "boolean": "true or false",
            "choice": f"one of {list(self.choices)}",
            "vector": f"a list of {self.length} finite numbers"
            + (", not all zero" if self.nonzero else ""),
            "path": 'a path string ("" for none), relative to the TOML file that names it',
            "paths": f"a list of path strings to mask files ({', '.join(MASK_SUFFIXES)})",
            "pairs": "two [sl_direction, al_direction] pairs of 3 numbers each, e.g. "
            "[[[1, 1, 0], [1, 0, 0]], [[0, 0, 1], [0, 0, 1]]]",
        }[self.kind]
        text = " ".join([text, *bounds])
        return f"{text} ({self.unit})" if self.unit else text


def _key(default: Any, check: Check) -> Any:
    return field(default=default, metadata={"check": check})


def _number(default: float, unit: str = "", **bounds: float) -> Any:
    return _key(default, Check("number", unit=unit, **bounds))


@dataclass(frozen=True)
class BeamConfig:
    """Incident beam (``[beam]``).

    Attributes
    ----------
    energy_kev : float
        Photon energy (keV), > 0.
    polarization_factor : float
        pyFAI's polarization factor in [-1, 1]; horizontal linear polarization ~ +1.
    exposure_s : float
        Exposure per frame (s), > 0.
    flux_photons_per_s : float
        Incident flux for synthetic scans (photons/s), > 0.
    """

    energy_kev: float = _number(13.8, "keV", gt=0)
    polarization_factor: float = _number(0.99, "pyFAI convention", ge=-1, le=1)
    exposure_s: float = _number(0.3, "s", gt=0)
    flux_photons_per_s: float = _number(1.0e10, "photons/s", gt=0)


@dataclass(frozen=True)
class DetectorConfig:
    """Detector and its geometry (``[detector]``).

    When ``poni_file`` is given it supplies the geometry and the five geometry attributes
    (``distance_m``, ``beam_center_px``, ``rot1_deg``..``rot3_deg``) are None.

    Attributes
    ----------
    name : str
        One of `KNOWN_DETECTORS`.
    poni_file : Path or None
        Absolute path of a pyFAI ``.poni`` file (lab frame and rotations as in pyFAI).
    distance_m : float or None
        Sample -> detector distance, pyFAI ``dist`` (m), > 0.
    beam_center_px : tuple of 2 floats or None
        Direct beam on the detector, (row, col) in pixel-index coordinates (pixel (i, j)'s
        centre at (i, j)).
    rot1_deg, rot2_deg, rot3_deg : float or None
        pyFAI detector rotations (degrees).
    binning : int
        Pixel binning, >= 1.
    """

    name: str = _key("Eiger4M", Check("choice", choices=KNOWN_DETECTORS))
    poni_file: Path | None = _key(None, Check("path"))
    distance_m: float | None = _number(0.41, "m", gt=0)
    beam_center_px: tuple[float, float] | None = _key(
        (1950.0, 200.0), Check("vector", unit="(row, col) pixels", length=2))
    rot1_deg: float | None = _number(0.0, "degrees")
    rot2_deg: float | None = _number(0.0, "degrees")
    rot3_deg: float | None = _number(0.0, "degrees")
    binning: int = _key(1, Check("integer", ge=1))


@dataclass(frozen=True)
class MaskConfig:
    """Masked pixels (``[mask]``).

    Attributes
    ----------
    beamstop_radius_px : float
        Beamstop radius around the beam centre (pixels), >= 0.
    holder_width_px : float
        Width of the beamstop holder strip (pixels), >= 0.
    holder_angle_deg : float
        Direction of the holder strip from the beam centre, pyFAI chi for an untilted
        detector (degrees).
    files : tuple of Path
        Absolute paths of mask files (npy, h5, edf, tiff); nonzero = masked.
    module_gaps : bool
        Mask the detector's module gaps.
    """

    beamstop_radius_px: float = _number(12.0, "pixels", ge=0)
    holder_width_px: float = _number(8.0, "pixels", ge=0)
    holder_angle_deg: float = _number(225.0, "degrees, pyFAI chi")
    files: tuple[Path, ...] = _key((), Check("paths"))
    module_gaps: bool = _key(True, Check("boolean"))


@dataclass(frozen=True)
class ModelConfig:
    """Evaluation settings of the forward model (``[model]``).

    Attributes
    ----------
    q_max_sl, q_max_al : float
        Largest |G| of the superlattice / atomic-lattice reflections (1/A), > 0 and at most
        the Ewald-sphere limit ``4 pi / lambda`` of ``beam.energy_kev``.
    band_nsigma : float
        Peaks are evaluated within this many sigmas, > 0.
    form_factor_nodes : int
        Quadrature nodes of the radius distribution, 1 to 1000.
    form_factor_nsigma : float
        Truncation of the Gaussian radius distribution (standard deviations), > 0; 6 converges
        (`xmodel.form_factor.sphere_form_factor`), 3 is sasmodels' default cut and the model's
        default for now (`DEFAULT_MODEL_FORM_FACTOR_NSIGMA`).
    sl_peak_weighting : str
        Size weighting of the SL Bragg peaks: "decoupling" (``|<F>|^2``, the decoupling
        approximation, `xmodel.form_factor.sphere_bragg_factor`, what the physics gives) or
        "average" (``<|F|^2>``, the default for now: `DEFAULT_SL_PEAK_WEIGHTING`).
    sl_peak_shape : str
        Shape of the SL Bragg peaks (`xmodel.pattern.sl_peak_widths`): "crystal" (tangential sigma
        ``sqrt(sigma_r^2 + (|G| sigma_mosaic)^2)``, the finite grain's isotropic Scherrer term plus
        the mosaic; radial widened by ``sl_paracrystal``; each reflection's integrated intensity
        independent of its widths, the kinematic integrated intensity) or "mosaic" (the default
        for now, `DEFAULT_SL_PEAK_SHAPE`; the model of earlier versions: radial sigma ``sigma_r``,
        tangential ``|G| sigma_mosaic``, height ``sl_scale`` whatever the widths, so the
        integrated intensity grows as ``|G|^2``), or "grain" ("crystal" with, across the Ewald
        sphere, the profile of the grain's shape transform, a pseudo-Voigt of eta 0.352 and FWHM
        ``3.37 / R`` with ``R`` from the size width, convolved with the mosaic's Gaussian:
        `xmodel.pattern.grain_across`; ``sl_peak_tail`` stays 0).
    sl_paracrystal : float
        Paracrystal (Hosemann) growth of the SL radial width with the "crystal" and "grain" shapes (A, >= 0):
        ``sigma_r(G)^2 = sigma_r^2 + (sl_paracrystal |G|^2)^2``; 0 (the default) leaves it out.
    sl_peak_tail : float
        Lorentzian share eta (0 to 1) of the SL peaks' profile across the Ewald sphere, a
        pseudo-Voigt (`xmodel.pattern.across_sphere_profile`): the tails a finite grain's shape
        transform has along the sphere's normal, which set how a cut reflection's intensity
        falls with its excitation error and so the fitted tilts; 0 (the default) is the
        Gaussian peak.
    al_peak_intensity : str
        What of an AL reflection follows ``|F_hkl|^2 / |F_200|^2`` (`xmodel.pattern.al_peak_height`):
        "integrated" (the default: its integral over reciprocal space, as for a crystal's kinematic
        integrated intensity; the orientational spread spreads it over a cap of the sphere of radius
        |G|, so the height falls as ``1 / sigma_t^2``) or "height" (its peak height, the model of
        earlier versions, which overweights the outer reflections' arcs by ``(sigma_t / sigma_t,200)^2``).
        ``al_scale`` is the height of the 200 reflection either way.
    """

    q_max_sl: float = _number(0.25, "1/A", gt=0)
    q_max_al: float = _number(3.2, "1/A", gt=0)
    band_nsigma: float = _number(5.0, "sigmas", gt=0)
    form_factor_nodes: int = _key(40, Check("integer", ge=1, le=1000))
    form_factor_nsigma: float = _number(DEFAULT_MODEL_FORM_FACTOR_NSIGMA, "standard deviations", gt=0)
    sl_peak_weighting: str = _key(DEFAULT_SL_PEAK_WEIGHTING, Check("choice", choices=SL_PEAK_WEIGHTINGS))
    sl_peak_shape: str = _key(DEFAULT_SL_PEAK_SHAPE, Check("choice", choices=SL_PEAK_SHAPES))
    sl_paracrystal: float = _number(0.0, "A", ge=0)
    sl_peak_tail: float = _number(0.0, ge=0, le=1)
    al_peak_intensity: str = _key("integrated", Check("choice", choices=AL_PEAK_INTENSITIES))


@dataclass(frozen=True)
class SuperlatticeConfig:
    """fcc superlattice of nanocrystals (``[superlattice]``); frames as in docs/conventions.md.

    Attributes
    ----------
    lattice_constant : float
        Cubic lattice constant a (A), > 0.
    beam_direction : tuple of 3 floats
        SL crystal direction along the incident beam (maps to +e3), not all zero.
    inplane_reference : tuple of 3 floats
        SL crystal direction whose component normal to ``beam_direction`` maps to +e2; must
        not be parallel to ``beam_direction``.
    inplane_deg, tilt1_deg, tilt2_deg : float
        Rotations about e3, e1, e2 (degrees):
        ``R_sl = R_e1(tilt1) R_e2(tilt2) R_e3(inplane) R_base``.
    radial_width : float
        sigma_r of the SL peaks (1/A), > 0.
    mosaic_deg : float
        sigma of the SL mosaic spread (degrees), in (0, 90].
    peak_scale : float
        Counts/pixel at the peak of a reflection with P(q) = 1, before solid angle and
        polarization, >= 0.
    diffuse_scale : float
        Isotropic P(q) term (counts/pixel), >= 0.
    """

    lattice_constant: float = _number(150.0, "A", gt=0)
    beam_direction: tuple[float, float, float] = _key(
        (0.0, 0.0, -1.0), Check("vector", unit="SL crystal coordinates", nonzero=True))
    inplane_reference: tuple[float, float, float] = _key(
        (1.0, 0.0, 0.0), Check("vector", unit="SL crystal coordinates", nonzero=True))
    inplane_deg: float = _number(0.0, "degrees")
    tilt1_deg: float = _number(0.0, "degrees")
    tilt2_deg: float = _number(0.0, "degrees")
    radial_width: float = _number(0.0015, "1/A", gt=0)
    mosaic_deg: float = _number(1.0, "degrees", gt=0, le=90)
    peak_scale: float = _number(5.0e3, "counts/pixel", ge=0)
    diffuse_scale: float = _number(50.0, "counts/pixel", ge=0)


@dataclass(frozen=True)
class NanocrystalConfig:
    """Nanocrystal core size distribution (``[nanocrystal]``).

    Attributes
    ----------
    radius : float
        Mean core radius (A), > 0 (the paper's S4 caption gives 65 A, read here as a diameter:
        spheres of 130 A cannot sit 106 A apart, the nearest-neighbour distance).
    radius_sigma : float
        Standard deviation of the Gaussian radius distribution (A), >= 0.
    """

    radius: float = _number(34.0, "A", gt=0)
    radius_sigma: float = _number(2.5, "A", ge=0)


@dataclass(frozen=True)
class AtomicLatticeConfig:
    """PbS atomic lattice and its orientation relationship to the SL (``[atomic_lattice]``).

    Attributes
    ----------
    configuration : str
        ``"conf1"``, ``"conf2"`` (Figure 5) or ``"custom"``.
    custom_pairs : tuple
        For ``"custom"``: two (sl_direction, al_direction) pairs of parallel directions (SL and
        AL crystal coordinates) at equal angles; empty otherwise.
    lattice_constant : float
        Rock-salt lattice constant (A), > 0.
    radial_width : float
        sigma_s, Scherrer radial width (1/A), > 0.
    disorder_fwhm_deg : float
        dPhi of Eq. 7, FWHM of the NC orientational disorder (degrees), in [0, 180].
    misorientation_deg : tuple of 3 floats
        Rotation vector of the NCs relative to the ideal relationship (degrees).
    peak_scale : float
        Counts/pixel at the peak of 200_AL before solid angle and polarization, >= 0.
    """

    configuration: str = _key("conf1", Check("choice", choices=CONFIGURATIONS))
    custom_pairs: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = _key(
        (), Check("pairs"))
    lattice_constant: float = _number(5.936, "A", gt=0)
    radial_width: float = _number(0.039, "1/A", gt=0)
    disorder_fwhm_deg: float = _number(15.0, "degrees FWHM", ge=0, le=180)
    misorientation_deg: tuple[float, float, float] = _key(
        (0.0, 0.0, 0.0), Check("vector", unit="rotation vector, degrees"))
    peak_scale: float = _number(20.0, "counts/pixel", ge=0)


@dataclass(frozen=True)
class BackgroundConfig:
    """Flat background (``[background]``).

    Attributes
    ----------
    constant : float
        Counts/pixel, >= 0.
    """

    constant: float = _number(0.05, "counts/pixel", ge=0)


#: the scan fit's tuning table: passed through as given, checked by fits.scan.settings
FIT_TABLE = "fit"

TABLES: dict[str, type] = {
    "beam": BeamConfig, "detector": DetectorConfig, "mask": MaskConfig, "model": ModelConfig,
    "superlattice": SuperlatticeConfig, "nanocrystal": NanocrystalConfig,
    "atomic_lattice": AtomicLatticeConfig, "background": BackgroundConfig,
}


@dataclass(frozen=True)
class Config:
    """A complete, validated configuration: experiment tables, sample tables, provenance.

    Attributes
    ----------
    beam, detector, mask, model : BeamConfig, DetectorConfig, MaskConfig, ModelConfig
        The experiment tables.
    superlattice, nanocrystal, atomic_lattice, background : SuperlatticeConfig, ...
        The sample tables.
    name : str
        The top-level ``name`` key (default: the stem of the last file).
    sources : tuple of str
        Absolute paths of the files read, in order, then each ``--set`` override as given.
    fit : dict
        The ``[fit]`` table as given (tuning of the scan fit; checked by
        `fits.scan.settings.settings_from_config`, which this layer does not import).
    fit_sources : dict
        Where each ``[fit]`` key came from (file or ``--set``), for error messages.
    """

    beam: BeamConfig
    detector: DetectorConfig
    mask: MaskConfig
    model: ModelConfig
    superlattice: SuperlatticeConfig
    nanocrystal: NanocrystalConfig
    atomic_lattice: AtomicLatticeConfig
    background: BackgroundConfig
    name: str
    sources: tuple[str, ...]
    fit: dict = dataclasses.field(default_factory=dict, hash=False)
    fit_sources: dict = dataclasses.field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict:
        """Resolved values as nested plain dicts in TOML-edge units (for HDF5 attributes, JSON).

        Tuples become lists, paths absolute strings, a missing ``poni_file`` ``""``; geometry
        keys that a ``.poni`` file supplies are left out, so the result written as TOML loads
        back to the same `Config`. ``sources`` is not included (write it separately).

        Validation: written as TOML and loaded again it gives the same dict
        (tests/xmodel/test_config.py).
        """
        out: dict[str, Any] = {"name": self.name}
        for table in TABLES:
            values = {}
            for f in dataclasses.fields(getattr(self, table)):
                value = getattr(getattr(self, table), f.name)
                if f.name == "poni_file":
                    values[f.name] = "" if value is None else str(value)
                elif value is not None:
                    values[f.name] = _plain(value)
            out[table] = values
        if self.fit:
            out["fit"] = {k: _plain(v) for k, v in self.fit.items()}
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def default_paths(domain: str) -> list[Path]:
    """Return [experiment TOML, domain TOML] of the shipped configs for one of the paper's domains.

    Parameters
    ----------
    domain
        One of `DOMAINS` (the colours of Figure 1), case-insensitive.

    Returns
    -------
    list of Path
        ``experiment/p10_eiger4m.toml`` and ``domains/<domain>.toml`` under `CONFIG_DIR`: the
        repository's ``configs/`` (source checkout, editable install) or the package data
        ``xmodel/configs`` of an installed wheel.

    Validation: every returned pair loads with the paper's values (tests/xmodel/test_config.py).
    """
    name = domain.strip().lower() if isinstance(domain, str) else domain
    if name not in DOMAINS:
        raise ConfigError(
            f"Unknown domain {domain!r}: the shipped configs are {list(DOMAINS)} "
            f"(Figure 1 of the paper).{_did_you_mean(str(domain).lower(), DOMAINS)} "
            f"For other samples pass your own TOML files to load_config.")
    return [EXPERIMENT_TOML, CONFIG_DIR / "domains" / f"{name}.toml"]


def shipped_config(name: str | Path) -> Path:
    """The path of a shipped config named without folder or suffix, or ``name`` itself if it
    is a file.

    ``"p10_eiger4m"`` -> ``CONFIG_DIR/experiment/p10_eiger4m.toml``, ``"yellow"`` ->
    ``CONFIG_DIR/domains/yellow.toml``, ``"twin"`` / ``"demo"`` -> ``CONFIG_DIR/<name>.toml``;
    ``"configs/domains/red.toml"`` also works from anywhere. So an installed user (no
    repository checkout) writes ``xmodel peaks p10_eiger4m yellow`` or
    ``load_config(default_paths("yellow"))``.

    Raises
    ------
    ConfigError
        If ``name`` is neither a file nor a shipped config; lists the shipped names.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    text = str(name)
    if text.startswith("configs/"):
        candidate = CONFIG_DIR / text[len("configs/"):]
        if candidate.is_file():
            return candidate
    stem = Path(text).stem if text.endswith(".toml") else text
    shipped = {p.stem: p for p in sorted(CONFIG_DIR.rglob("*.toml"))}
    if "/" not in text and stem in shipped:
        return shipped[stem]
    raise ConfigError(
        f"Config file {text!r} does not exist and is not a shipped config; the shipped ones "
        f"(in {CONFIG_DIR}) are {sorted(shipped)}.{_did_you_mean(stem, list(shipped))}")


def parse_override(text: str) -> tuple[str, str, object]:
    """Parse one ``--set`` override ``"table.key=value"`` into ``(table, key, value)``.

    The value is parsed as a TOML value (``[1,1,2]``, ``140``, ``true``, ``"conf1"``); a bare word
    that is not valid TOML (``conf1``, ``masks/extra.npy``) is taken as a string, an empty value
    as ``""``. The top-level ``name`` is given without a table (``name=red``) and returns table
    ``""``. Whether the table and key exist is checked by `load_config`.

    Examples
    --------
    >>> parse_override("superlattice.beam_direction=[1,1,2]")
    ('superlattice', 'beam_direction', [1, 1, 2])
    >>> parse_override("atomic_lattice.configuration=conf1")
    ('atomic_lattice', 'configuration', 'conf1')

    Validation: pinned for arrays, numbers, strings, bools and bare words
    (tests/xmodel/test_config.py).
    """
    if "=" not in text:
        raise ConfigError(
            f"--set {text!r} has no '=': write it as table.key=value, "
            f"e.g. --set superlattice.lattice_constant=140.")
    dotted, raw = (part.strip() for part in text.split("=", 1))
    parts = dotted.split(".")
    if len(parts) > 2 or not all(parts):
        raise ConfigError(
            f"--set {text!r}: the key {dotted!r} must be table.key with one dot (or the top-level "
            f"'name'), e.g. --set superlattice.beam_direction=[1,1,2].")
    table, key = ("", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    if raw == "":
        return table, key, ""
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError as exc:
        if re.fullmatch(r"[\w./~:+-]+", raw):
            return table, key, raw
        raise ConfigError(
            f"--set {text!r}: the value {raw!r} is not a TOML value ({exc}); write arrays as "
            f"[1,1,2], strings as conf1 or \"conf 1\", booleans as true/false.") from None
    return table, key, value


def load_config(paths: Sequence[str | Path], overrides: Sequence[str] = ()) -> Config:
    """Load, merge and validate TOML configuration files and ``--set`` overrides.

    Parameters
    ----------
    paths
        TOML files, merged in order (experiment first, then sample); later files override
        earlier keys table by table. `default_paths` gives the shipped ones.
    overrides
        ``"table.key=value"`` strings (see `parse_override`), applied after all files.

    Returns
    -------
    Config
        Frozen, validated; paths absolute.

    Raises
    ------
    ConfigError
        For a missing file, invalid TOML (with file and line), an unknown table or key (with
        the closest valid one), a wrong type, length or range, a contradiction between keys,
        or no experiment ([beam] and [detector]) in any source.

    Notes
    -----
    The radial width defaults follow Table S2 via sigma_s = |G_200| * radians(FWHM) / 2.3548;
    the disorder is Eq. 7's dPhi (see docs/conventions.md).

    Validation: tests/xmodel/test_config.py loads every shipped config and pins every error.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    values: dict[str, dict[str, Any]] = {}
    origin: dict[tuple[str, str], tuple[str, Path]] = {}  # (table, key) -> (source, base dir)
    sources: list[str] = []
    for raw_path in paths:
        path = Path(raw_path).expanduser()
        if not path.is_file():
            try:
                path = shipped_config(raw_path)
            except ConfigError:
                pass  # _read_toml names the missing file
        path = path.resolve()
        _merge(values, origin, _read_toml(path), str(path), path.parent)
        sources.append(str(path))
    for text in overrides:
        table, key, value = parse_override(text)
        data = {key: value} if table == "" else {table: {key: value}}
        _merge(values, origin, data, f"--set {text}", Path.cwd())
        sources.append(f"--set {text}")
    missing = [t for t in ("beam", "detector") if t not in values]
    if missing:
        raise ConfigError(
            f"No experiment configuration: no table {', '.join(f'[{t}]' for t in missing)} in "
            f"{sources or 'no files at all'}. Pass the experiment TOML first, e.g. "
            f"load_config(default_paths('red')) or [{EXPERIMENT_TOML}, <sample.toml>].")
    tables = {t: _build(t, cls, values.get(t, {}), origin) for t, cls in TABLES.items()}
    _check_q_max(tables["model"], tables["beam"], origin)
    name = values.get("", {}).get("name", Path(paths[-1]).stem if paths else "")
    fit = dict(values.get(FIT_TABLE, {}))
    return Config(**tables, name=name, sources=tuple(sources), fit=fit,
                  fit_sources={k: origin[(FIT_TABLE, k)][0] for k in fit})


def _read_toml(path: Path) -> dict:
    if path.is_dir():
        raise ConfigError(
            f"Config path {str(path)!r} is a directory, not a TOML file. Pass the TOML files "
            f"themselves, e.g. {str(path / 'experiment.toml')!r}; the shipped configs are "
            f"{EXPERIMENT_TOML} and {CONFIG_DIR / 'domains'}/<{'|'.join(DOMAINS)}>.toml.")
    if not path.is_file():
        raise ConfigError(
            f"Config file {str(path)!r} does not exist. Check the path; the shipped configs are "
            f"in {CONFIG_DIR} (experiment/p10_eiger4m.toml, domains/<{'|'.join(DOMAINS)}>.toml), "
            f"see default_paths(domain).")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Config file {str(path)!r} cannot be read: {exc.strerror or exc}. Check its "
                          f"permissions.") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(
            f"Config file {str(path)!r} is not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line} "
            f"(offset {exc.start}) cannot be decoded. TOML files must be UTF-8; re-save it as UTF-8 "
            f"(e.g. iconv -f latin1 -t utf-8).") from None
    try:
        return tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Invalid TOML in {path}: {exc}. Fix the syntax there.") from None


def _did_you_mean(word: str, valid: Sequence[str], prefix: str = "") -> str:
    """Return " Did you mean 'closest'?" (difflib) or "" when nothing is close."""
    match = difflib.get_close_matches(word, list(valid), n=1, cutoff=0.6)
    return f" Did you mean {prefix + match[0]!r}?" if match else ""


def _merge(values: dict, origin: dict, data: dict, source: str, base: Path) -> None:
    for table, body in data.items():
        if table == FIT_TABLE:
            if not isinstance(body, dict):
                raise ConfigError(_type_message(FIT_TABLE, body, source, f"a table [{FIT_TABLE}]"))
            for key, value in body.items():
                values.setdefault(FIT_TABLE, {})[key] = value
                origin[(FIT_TABLE, key)] = (source, base)
            continue
        if table == "name":
            if not isinstance(body, str):
                raise ConfigError(_type_message("name", body, source, "a string"))
            values.setdefault("", {})["name"] = body
            origin[("", "name")] = (source, base)
            continue
        if not isinstance(body, dict) and table in TABLES:
            raise ConfigError(_type_message(table, body, source, f"a table [{table}]"))
        if not isinstance(body, dict):
            owner = [f"{t}.{table}" for t, cls in TABLES.items()
                     if table in {f.name for f in dataclasses.fields(cls)}]
            hint = f"; it belongs in a table: {owner[0]}" if owner else ""
            raise ConfigError(
                f"Unknown top-level key {table!r} in {source}{hint}. The only top-level key is "
                f"'name'; all others belong in the tables {list(TABLES)}.")
        if table not in TABLES:
            raise ConfigError(
                f"Unknown table [{table}] in {source}.{_did_you_mean(table, [*TABLES, FIT_TABLE])} "
                f"Valid tables: {[*TABLES, FIT_TABLE]}.")
        valid = [f.name for f in dataclasses.fields(TABLES[table])]
        values.setdefault(table, {})
        for key, value in body.items():
            if key not in valid:
                raise ConfigError(
                    f"Unknown key {table}.{key} in {source}."
                    f"{_did_you_mean(key, valid, prefix=table + '.')} "
                    f"Valid keys of [{table}]: {valid}.")
            values.setdefault(table, {})[key] = value
            origin[(table, key)] = (source, base)


def _show(value: Any) -> str:
    """Write a parsed value the way it would appear in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _type_name(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"),
                       (str, "a string"), (dict, "a table")):
        if isinstance(value, kind):
            return name
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    return type(value).__name__


def _type_message(key: str, value: Any, source: str, expected: str) -> str:
    return (f"{key} = {_show(value)} ({_type_name(value)}) in {source}: expected {expected}. "
            f"Fix the value there or override it with --set {key}=<value>.")


def _is_number(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:     # an integer beyond the float range
        return False


def _coerce(value: Any, check: Check, key: str, source: str, base: Path) -> Any:
    bad = ConfigError(_type_message(key, value, source, check.expected()))
    kind = check.kind
    if kind in ("number", "integer"):
        if not _is_number(value) or (kind == "integer" and not isinstance(value, int)):
            raise bad
        if ((check.gt is not None and not value > check.gt)
                or (check.ge is not None and not value >= check.ge)
                or (check.le is not None and not value <= check.le)):
            raise bad
        return float(value) if kind == "number" else int(value)
    if kind in ("string", "choice"):
        if not isinstance(value, str) or (kind == "choice" and value not in check.choices):
            hint = _did_you_mean(value, check.choices) if isinstance(value, str) else ""
            raise ConfigError(str(bad) + hint)
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise bad
        return value
    if kind == "vector":
        if not (isinstance(value, list) and len(value) == check.length
                and all(_is_number(v) for v in value)):
            raise bad
        if check.nonzero and not any(value):
            raise bad
        return tuple(float(v) for v in value)
    if kind == "path":
        if not isinstance(value, str):
            raise bad
        return _existing(value, key, source, base) if value else None
    if kind == "paths":
        if not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
            raise bad
        files = tuple(_existing(v, key, source, base) for v in value)
        for f in files:
            if f.suffix.lower() not in MASK_SUFFIXES:
                raise ConfigError(
                    f"{key} names {str(f)!r} in {source}, which is not a mask file type: "
                    f"expected one of {list(MASK_SUFFIXES)}. Convert the mask (nonzero = masked).")
        return files
    if kind == "pairs":
        vec = Check("vector", nonzero=True)
        if not (isinstance(value, list) and len(value) in (0, 2)
                and all(isinstance(p, list) and len(p) == 2 for p in value)):
            raise bad
        try:
            return tuple(tuple(_coerce(d, vec, key, source, base) for d in p) for p in value)
        except ConfigError:
            raise bad from None
    raise TypeError(f"internal: unknown check kind {kind!r}")


def _existing(text: str, key: str, source: str, base: Path) -> Path:
    path = (base / Path(text).expanduser()).resolve()
    if path.is_dir():
        raise ConfigError(
            f"{key} = {json.dumps(text)} in {source} resolves to {str(path)!r}, which is a directory: "
            f"expected a file. Name the file itself (relative paths are relative to the TOML file "
            f"that names them, to the working directory for --set).")
    if not path.is_file():
        raise ConfigError(
            f"{key} = {json.dumps(text)} in {source} resolves to {str(path)!r}, which does not "
            f"exist. Relative paths are relative to the TOML file that names them (to the "
            f"working directory for --set); fix the path.")
    return path


def _build(table: str, cls: type, given: dict[str, Any], origin: dict) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in given:
            source, base = origin[(table, f.name)]
            kwargs[f.name] = _coerce(given[f.name], f.metadata["check"], f"{table}.{f.name}",
                                     source, base)
    where = {k: origin[(table, k)][0] for k in given}
    if table == "detector" and kwargs.get("poni_file") is not None:
        both = [k for k in PONI_GEOMETRY_KEYS if k in given]
        if both:
            raise ConfigError(
                f"detector.poni_file (from {where['poni_file']}) supplies the geometry, but "
                f"{', '.join(f'detector.{k} (from {where[k]})' for k in both)} is also given. "
                f"Remove {', '.join(both)} or set detector.poni_file = \"\".")
        kwargs.update({k: None for k in PONI_GEOMETRY_KEYS})
    config = cls(**kwargs)
    if table == "superlattice":
        _check_inplane_reference(config, where)
    if table == "atomic_lattice":
        _check_custom_pairs(config, where)
    return config


#: hc in keV Angstrom (CODATA 2018), lambda = HC_KEV_A / E
HC_KEV_A = 12.398419843320026


def _check_q_max(model: ModelConfig, beam: BeamConfig, origin: dict) -> None:
    """Refuse reflection cut-offs beyond the Ewald-sphere limit |q| <= 4 pi / lambda (Bragg's law)."""
    limit = 4 * math.pi * beam.energy_kev / HC_KEV_A
    for key in ("q_max_sl", "q_max_al"):
        value = getattr(model, key)
        if value > limit:
            src = origin.get(("model", key), ("the default",))[0]
            raise ConfigError(
                f"model.{key} = {value:g} 1/A (from {src}) lies beyond the Ewald-sphere limit "
                f"4 pi / lambda = {limit:.4g} 1/A at beam.energy_kev = {beam.energy_kev:g}: no "
                f"reflection there can diffract. Expected a value in (0, {limit:.4g}] 1/A, e.g. "
                f"0.25 for the superlattice, 3.2 for the atomic lattice.")


def _normal_part(v: Sequence[float], axis: Sequence[float]) -> list[float]:
    n2 = sum(a * a for a in axis)
    dot = sum(a * b for a, b in zip(v, axis))
    return [a - dot / n2 * b for a, b in zip(v, axis)]


def _angle_deg(u: Sequence[float], v: Sequence[float]) -> float:
    cos = sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def _check_inplane_reference(sl: SuperlatticeConfig, where: dict[str, str]) -> None:
    normal = _normal_part(sl.inplane_reference, sl.beam_direction)
    if math.sqrt(sum(c * c for c in normal)) < 1e-6 * math.sqrt(sum(c * c for c in sl.inplane_reference)):
        src = where.get("inplane_reference", "the default")
        raise ConfigError(
            f"superlattice.inplane_reference = {_show(list(sl.inplane_reference))} (from {src}) is "
            f"parallel to superlattice.beam_direction = {_show(list(sl.beam_direction))} (from "
            f"{where.get('beam_direction', 'the default')}): expected a direction with a component "
            f"normal to the beam. Set superlattice.inplane_reference to another direction, "
            f"e.g. [0, 1, 0] or [0, 0, 1].")


def _check_custom_pairs(al: AtomicLatticeConfig, where: dict[str, str]) -> None:
    src = where.get("custom_pairs", where.get("configuration", "the defaults"))
    if al.configuration != "custom" and al.custom_pairs:
        raise ConfigError(
            f"atomic_lattice.custom_pairs is given (in {src}) but atomic_lattice.configuration = "
            f"{json.dumps(al.configuration)}: the pairs are used only with configuration = "
            f'"custom". Remove custom_pairs or set configuration = "custom".')
    if al.configuration == "custom":
        if not al.custom_pairs:
            raise ConfigError(
                f'atomic_lattice.configuration = "custom" (in {where.get("configuration")}) needs '
                f"atomic_lattice.custom_pairs: expected {Check('pairs').expected()}.")
        (sl1, al1), (sl2, al2) = al.custom_pairs
        angle_sl, angle_al = _angle_deg(sl1, sl2), _angle_deg(al1, al2)
        if min(angle_sl, 180 - angle_sl) < 1e-3:
            raise ConfigError(
                f"atomic_lattice.custom_pairs in {src}: the SL directions {_show(list(sl1))} and "
                f"{_show(list(sl2))} are parallel; expected two non-parallel directions.")
        if abs(angle_sl - angle_al) > 1.0:
            raise ConfigError(
                f"atomic_lattice.custom_pairs in {src}: the SL directions are {angle_sl:.2f} deg "
                f"apart but the AL directions {angle_al:.2f} deg; expected equal angles (within "
                f"1 deg) so that one rotation maps both pairs. Fix one of the directions.")
