"""Every tuning number of the scan fit, in one place, with its unit and the reason for its value.

`FitSettings` groups them by the stage they steer: the model support (`SupportSettings`), the
template search (`SearchSettings`), the refinement (`RefineSettings`), the evidence thresholds
that give a frame its status (`EvidenceSettings`), the neighbour passes (`NeighbourSettings`),
the boundary lines (`LineSettings`) and the run itself (`RunSettings`). Each field carries its
unit, its accepted range and the reason for its default in the field metadata (`Setting`);
`describe` lists them (docs/configuration.md, table ``[fit]``).

Names are unique across the groups, so one flat key addresses each setting: a ``[fit]`` table
of the TOML configs (``[fit] neighbour_passes = 0``), ``--set fit.neighbour_passes=0`` on the
command line (`settings_from_config`), and the few options of ``xmodel fit`` / ``xmodel
boundary`` (`add_cli_options`, which take their defaults and help from here). The resume
fingerprint of a scan fit is `FitSettings.to_flat` (`fits.scan.results`).

Precedence: the defaults below, then the ``[fit]`` tables of the config files in order, then
``--set fit.KEY=VALUE``, then explicit command-line options.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fits.status import FitStatus
from xmodel.config import _show, _type_name  # the config's way of quoting a TOML value

#: parameters refined per frame (edge names of fits.parameters.PARAMETER_TABLE)
DEFAULT_VARY = ("inplane_deg", "tilt1_deg", "tilt2_deg", "lattice_constant", "sl_scale",
                "diffuse_scale", "al_scale", "background", "disorder_deg")
#: the NC misorientation's fit parameters (`RefineSettings.misorientation_prior_deg`)
MISORIENTATION = ("mis1_deg", "mis2_deg", "mis3_deg")
#: zone axes (b, in-plane reference r or None) the reported angles refer to (paper: Fig. 1, S4)
DEFAULT_ZONES = (((0, 0, -1), (1, 0, 0)), ((-1, 1, 0), (0, 0, 1)), ((3, 0, -1), (0, 1, 0)),
                 ((1, 1, 1), None), ((1, 1, 2), None))
#: FitStatus names in the order a boundary line prefers them (one group per rank); a status
#: not listed is not a usable fit on a line
DEFAULT_LINE_PREFERENCE = (("ok", "at_bound"), ("mixed",), ("not_converged",))
#: keys that do not change a result and are left out of the resume fingerprint
NOT_FINGERPRINTED = ("cache_dir", "batches_in_flight")


@dataclass(frozen=True)
class Setting:
    """What one setting accepts and why it has its default (a field's metadata).

    ``kind``: number, integer, pair (two numbers), names (list of parameter names), zones,
    preference or path; ``gt``/``ge``/``le``: bounds (of both numbers of a pair); ``inf``: a number
    may be infinite (the thresholds and margins, where inf means "never", or "always" for
    ``conf_margin``), else it must be finite; ``unit`` and ``reason``: for docs and messages.
    Upper bounds keep a value from exhausting memory or time (a template bank, a grid or a batch
    that grows without limit), not from steering the result.
    """

    kind: str
    unit: str
    reason: str
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    inf: bool = False

    def expected(self) -> str:
        """The accepted values in words, for error messages."""
        if self.kind == "pair":
            lo = f"{self.gt:g} < " if self.gt is not None else f"{self.ge:g} <= " if self.ge is not None else ""
            hi = f" <= {self.le:g}" if self.le is not None else ""
            text = f"two finite numbers [lo, hi] with {lo}lo < hi{hi}"
        else:
            number = "a number (or inf)" if self.inf else "a finite number"
            text = {"number": number, "integer": "an integer", "names": "a list of parameter names",
                    "zones": "a list of [zone_axis] or [zone_axis, reference]",
                    "preference": "a list of lists of fit status names", "path": 'a folder path ("" for none)'
                    }[self.kind]
            bounds = [f"> {self.gt:g}" if self.gt is not None else "",
                      f">= {self.ge:g}" if self.ge is not None else "", f"<= {self.le:g}" if self.le is not None else ""]
            bounds = [b for b in bounds if b]
            text = f"{text} {' and '.join(bounds)}" if bounds else text
        return f"{text} ({self.unit})" if self.unit else text

    def accepts(self, value: float) -> bool:
        """True when the number ``value`` lies within the bounds (and is finite unless ``inf``)."""
        if math.isnan(value) or (math.isinf(value) and not self.inf):
            return False
        return not ((self.gt is not None and not value > self.gt) or (self.ge is not None and not value >= self.ge)
                    or (self.le is not None and not value <= self.le))


def _s(default: Any, kind: str, unit: str, reason: str, **bounds: float) -> Any:
    return field(default=default, metadata={"setting": Setting(kind, unit, reason, **bounds)})


@dataclass(frozen=True)
class SupportSettings:
    """Which lattice constants and peak widths the model covers, hence its fit points."""

    a_range_rel: tuple[float, float] = _s(
        (0.85, 1.05), "pair", "of the config's superlattice.lattice_constant",
        "compressed boundary points reach -13 % (paper Table S3); +5 % covers the bulk's spread", ge=0.5, le=2)
    width_factor: float = _s(
        1.5, "number", "", "the fit points and SL windows cover peaks this many times as wide as the config's "
        "(disorder broadens them); a width in fit.vary may grow to it and no further (at a bound there)",
        ge=1, le=10)
    band_nsigma: float = _s(
        4.0, "number", "radial sigmas", "half-width of the SL and AL q-bands kept as fit points: "
        "the Gaussian peaks are below 3e-4 of their height outside", gt=0, le=20)
    sl_window_nsigma: float = _s(
        4.0, "number", "tangential sigmas", "each SL reflection is evaluated only on the polar points within "
        "this many tangential sigmas (of sl_mosaic times width_factor) of it, found anew at every evaluation "
        "(fits.scan.window): the cut of band_nsigma, about 20 times fewer Gaussians than every point of the "
        "shell's q-band; 0 evaluates them all", ge=0, le=20)


@dataclass(frozen=True)
class SearchSettings:
    """Template search of the SL orientation."""

    step_deg: float = _s(1.5, "number", "deg", "zone-axis spacing of the template bank (810 zone axes of "
                         "the fundamental zone, 9 times as many at 0.5 deg); each match is then refined on a "
                         "finer cone", ge=0.5, le=10)
    n_candidates: int = _s(4, "integer", "", "distinct template matches (zone axes >= 3 bank steps apart) "
                           "ranked by their linear-scale deviance: fcc shells alias, the best score is "
                           "not always the right match", ge=1, le=100)
    min_significance: float = _s(8.0, "number", "", "SL ring peak significance (peak over robust noise) "
                                 "below which a frame has no signal: empty frames reach 1.6, weak "
                                 "in-domain frames 1.8-3 on the twin", ge=0, inf=True)
    ring_sigma_q: float = _s(0.0015, "number", "1/A", "radial sigma of the SL rings the search extracts "
                             "(superlattice.radial_width of the five domain configs)", gt=0, le=0.05)
    spike_sigma: float = _s(5.0, "number", "Poisson sigma", "a polar bin whose neighbours hold this many "
                            "sigma less than the least an SL peak puts next to its maximum is a hot pixel or zinger, "
                            "masked for the search and the mixed test (inf: never)", gt=0, inf=True)
    lattice_grid_points: int = _s(400, "integer", "", "lattice constants scored over the allowed range "
                                  "by the radial shell-position score (0.05 % steps over the default range)", ge=2, le=100000)
    n_lattice: int = _s(3, "integer", "", "candidate lattice constants per frame (maxima of that score): fcc "
                        "shells alias, 111 of a = 132 A sits where 200 of 152 A does", ge=1, le=100)
    lattice_separation: float = _s(0.02, "number", "relative", "candidate lattice constants differ by at "
                                   "least this fraction (the search tolerates 1-2 % error in a)", ge=0)
    match_separation_steps: float = _s(3.0, "number", "bank steps", "matches at one lattice constant have zone "
                                       "axes at least this many bank steps apart (distinct orientations, not "
                                       "the neighbours of one score peak)", ge=0)
    refine_step_deg: float = _s(0.4, "number", "deg", "spacing of the finer cone of zone axes around each "
                                "match", ge=0.05, le=10)
    refine_radius_steps: float = _s(1.0, "number", "bank steps", "radius of that cone: the coarse match is "
                                    "within one bank step of the best template", gt=0, le=10)
    zones: tuple = _s(DEFAULT_ZONES, "zones", "SL crystal directions",
                      "zone axes the reported tilt and in-plane angle refer to (the domains of Fig. 1, S4)")


@dataclass(frozen=True)
class RefineSettings:
    """Linear stage and Levenberg-Marquardt refinement."""

    vary: tuple[str, ...] = _s(DEFAULT_VARY, "names", "", "parameters refined per frame")
    misorientation_prior_deg: float = _s(
        2.0, "number", "deg", "where mis1_deg..mis3_deg are in vary, each has a Gaussian prior N(0, s^2) (the fit is "
        "the maximum a posteriori estimate, fits.batch): the NCs' mean misorientation from the Conf1/Conf2 "
        "relationship is small (paper, XCCA: slightly shifted peak positions), and without a prior the AL "
        "orientation of a frame whose AL peaks are weak or one-sided drifts to its 15 deg bound; 1 deg costs "
        "0.25 deviance units, 15 deg 56; inf: no prior", gt=0, inf=True)
    max_iter: int = _s(15, "integer", "", "accepted Levenberg-Marquardt steps per start, each a Jacobian; the "
                       "rejected trials between them do not count (fits.batch; the library's default; converged "
                       "demo-twin frames stop after 2-9)", ge=1, le=10000)
    tol: float = _s(2e-5, "number", "relative deviance decrease", "the deviance is about the number of fit "
                    "points (~5e4), so 2e-5 stops at changes of about one deviance unit", gt=0, le=1)
    n_refine: int = _s(1, "integer", "", "best candidates (by linear deviance) refined per frame in the "
                       "main pass, plus the best-scoring template when more than 1", ge=1, le=100)
    refine_margin: float = _s(10.0, "number", "deviance / dispersion", "every candidate whose linear-scale "
                              "deviance, divided by the best linear fit's dispersion max(phi, 1), is within this of "
                              "the best one's is refined too (the linear stage cannot tell them apart; a model that "
                              "misses the peak shapes has phi >> 1): a likelihood ratio of exp(5), as "
                              "replace_margin", ge=0, inf=True)
    conf_margin: float = _s(50.0, "number", "deviance", "a configuration is refined when its linear-scale "
                            "deviance is within this of the best one (inf: always both); which starts are tried, "
                            "not evidence, so not divided by a dispersion (none is known before the refinement)",
                            ge=0, inf=True)
    give_up_after: int = _s(3, "integer", "iterations", "the refinement of a neighbour start that cannot beat its "
                            "frame's fit is given up from this iteration on (fits.batch.GiveUp): earlier, starts that "
                            "will win still look like the others", ge=1, le=10000)
    give_up_factor: float = _s(30.0, "number", "predicted decreases", "... when its deviance exceeds the frame's "
                               "by more than this many times the decrease the Gauss-Newton step predicts (inf: never "
                               "give up)", ge=0, inf=True)
    give_up_gap: float = _s(1.6, "number", "of the frame's deviance", "... and by more than this share of it: "
                            "over 682 traced neighbour-start refinements of the 31 x 31 twin, the 333 that converged "
                            "below it exceeded it by up to 0.78 where the first test held (a factor 2 on that; inf: never "
                            "give up)", ge=0, inf=True)
    scale_floor: float = _s(1e-3, "number", "counts", "smallest starting sl/diffuse/al scale, so that none "
                            "starts on its bound", gt=0)
    background_floor: float = _s(1e-4, "number", "counts", "smallest starting background", gt=0)
    error_tile_chi_deg: float = _s(
        4.0, "number", "deg", "standard errors are widened to the cluster-robust sandwich wherever it is wider "
        "(fits.robust): the score summed over tiles of the polar grid this wide along chi, about an SL spot's FWHM "
        "for the 1 deg mosaic, so that a misfit peak shape, whose residuals share a sign over its footprint, counts "
        "as one error and not as many independent ones; inf: the quasi-likelihood errors alone", gt=0, inf=True)
    error_tile_q: float = _s(
        0.04, "number", "relative (dq / q)", "... and this wide in q (a spot's radial FWHM at the first SL shells "
        "for the 0.0015 1/A radial width is 2.7-4.9 %); inf: the quasi-likelihood errors alone", gt=0, inf=True)
    error_ring_q: float = _s(
        0.04, "number", "relative (dq / q)", "... and to the sandwich of whole rings this wide in q, a second "
        "clustering for a misfit shared over a shell (a peak-profile misfit moves every spot of a ring alike), "
        "where the lattice constant draws its information; each parameter's variance is the largest of the three "
        "(fits.robust); inf: the tiles alone", gt=0, inf=True)

    @property
    def robust_errors(self) -> bool:
        """Whether the standard errors are widened to the cluster-robust sandwich (both tiles finite)."""
        return math.isfinite(self.error_tile_chi_deg) and math.isfinite(self.error_tile_q)

    def prior(self) -> dict[str, tuple[float, float]]:
        """The Gaussian prior of the refinement, ``{name: (mean, sigma)}`` in edge units
        (`fits.batch.fit_batch`): ``(0, misorientation_prior_deg)`` for each of mis1_deg..mis3_deg
        in ``vary``; empty when none varies or the prior is flat (inf)."""
        if not math.isfinite(self.misorientation_prior_deg):
            return {}
        return {n: (0.0, float(self.misorientation_prior_deg)) for n in self.vary if n in MISORIENTATION}


@dataclass(frozen=True)
class EvidenceSettings:
    """Likelihood and residual thresholds that decide what a frame shows."""

    al_min_gain: float = _s(25.0, "number", "deviance / dispersion", "gain of the AL term, divided by the "
                            "refined fit's dispersion max(phi, 1) (quasi-likelihood ratio, McCullagh & Nelder "
                            "sec. 9.2), below which a frame has no AL signal (configuration and disorder "
                            "undetermined): the AL term adds one scale, chi2.sf(25, 1) = 6e-7", ge=0, inf=True)
    sl_min_gain: float = _s(100.0, "number", "deviance / dispersion", "gain of the SL term, divided by the "
                            "fit's dispersion max(phi, 1) (quasi-likelihood ratio), a frame without a fit of its "
                            "own needs before a neighbour pass gives it one: the SL term's scale, three angles "
                            "and a are 5 degrees of freedom, and 100 is far beyond chi2.isf(1e-6, 5) = 36 "
                            "for the look-elsewhere effect of many orientations", ge=0, inf=True)
    mixed_ratio: float = _s(0.1, "number", "of the frame's significance", "SL ring significance left after "
                            "the fit (>= min_significance), over the square root of the fit's dispersion on its "
                            "SL peaks, that makes a frame mixed: a second orientation with a fraction f of the "
                            "beam has peaks f / (1 - f) of the first's, 0.11 for the f = 0.1 that makes a twin "
                            "point mixed (configs/twin.toml mixed_threshold)", ge=0, inf=True)
    mixed_al_significance: float = _s(12.0, "number", "Poisson sigma / sqrt(dispersion)", "AL excess left after "
                                      "the fit away from its AL peaks, over the square root of the fit's dispersion "
                                      "on them, that makes a frame mixed: mixed frames the AL test decides 16-63 on the "
                                      "Gaussian 31 x 31 twin, 29-33 on the realistic 21 x 21 twin; single grains "
                                      "<= 5.4 and <= 9.4", ge=0, inf=True)
    mixed_al_ratio: float = _s(0.1, "number", "of the fitted AL peaks", "and this fraction of the fitted AL "
                               "peak height: f / (1 - f) = 0.11 for a second orientation with f = 0.1 of the beam",
                               ge=0, inf=True)
    mixed_al_band_sigma: float = _s(3.0, "number", "AL radial sigmas", "half-width of the AL shells searched "
                                    "for a second NC orientation", gt=0)
    second_grain_deg: float = _s(15.0, "number", "deg", "misorientation from a frame's fit beyond which an ok scan "
                                 "neighbour whose orientation agrees with its own neighbours counts as a second "
                                 "grain: the frame is mixed when that orientation's SL peaks, added to its fit, "
                                 "gain sl_min_gain (fits.scan.second_grain). 15 deg is the high-angle boundary "
                                 "(Read & Shockley 1950): below it a lattice bends, as across a boundary's tilt "
                                 "gradient (inf: no such test)", gt=0, inf=True)


@dataclass(frozen=True)
class NeighbourSettings:
    """Neighbour passes: doubtful frames refitted from their scan neighbours' orientations."""

    neighbour_passes: int = _s(4, "integer", "", "passes after the main pass (0: none); each looks only at "
                               "the neighbours of what the last changed, and 2-3 suffice on the twin", ge=0, le=100)
    neighbour_min_significance: float = _s(1.75, "number", "", "SL ring significance from which a frame "
                                           "without a fit is tried from its neighbours (empty twin frames "
                                           "reach 1.6)", ge=0, inf=True)
    replace_margin: float = _s(10.0, "number", "deviance / dispersion", "decrease of the deviance, divided "
                               "by the refit's dispersion max(phi, 1) (quasi-likelihood ratio), a refit needs to "
                               "replace a frame's fit: the two fits are not nested (same parameters, other "
                               "basin), so a likelihood ratio of exp(5) (chi2.isf(0.01, 2) = 9.2 for comparison)",
                               ge=0, inf=True)
    max_neighbour_starts: int = _s(3, "integer", "", "distinct neighbour orientations tried per doubtful "
                                   "frame (the ok neighbours with the lowest deviance)", ge=1, le=100)
    agree_deg: float = _s(5.0, "number", "deg", "misorientation within which a frame agrees with a "
                          "neighbour: a boundary step rotates the SL by a few deg, wrong fits are 30-60 deg off",
                          gt=0, le=180)
    agree_share: float = _s(0.5, "number", "of the ok neighbours", "a frame agrees with its neighbours when "
                            "at most this share of them is further than agree_deg (a majority: a boundary "
                            "frame has neighbours on both sides)", ge=0, le=1)
    distinct_deg: float = _s(1.0, "number", "deg", "neighbour orientations closer than this to each other "
                             "(or to the frame's own) are one start", ge=0, le=180)
    grid_step: float = _s(0.02, "number", "relative", "spacing of the lattice-constant grid of the re-search: "
                          "the search tolerates 1-2 % error in a, fcc shells are 5-15 % apart", ge=0.001, le=0.5)
    research_n_refine: int = _s(2, "integer", "", "candidates refined per frame in the re-search", ge=1, le=100)
    neighbour_radius_steps: float = _s(1.5, "number", "scan steps", "scan points within this distance are "
                                       "neighbours (the 8 around a point of a square raster)", gt=1, le=10)


@dataclass(frozen=True)
class LineSettings:
    """Boundary lines (``xmodel boundary``)."""

    same_orientation_deg: float = _s(2.0, "number", "deg", "a search's mixed verdict within this of the "
                                     "chosen orientation marks the point mixed; a mixed winner further than "
                                     "this from the warm start gives way to the line's own grain", ge=0, le=180)
    bulk_tolerance_deg: float = _s(1.0, "number", "deg", "misorientation within which fitted points form "
                                   "the bulk plateau", gt=0, le=180)
    bulk_share: float = _s(0.5, "number", "", "the first line orientation shared by this fraction of the "
                           "best-supported one's map frames is the bulk", gt=0, le=1)
    min_start_significance: float = _s(0.0, "number", "", "SL ring significance from which a point is "
                                       "refined from its starts (the refinement's likelihood-ratio test "
                                       "decides below min_significance)", ge=0, inf=True)
    line_preference: tuple = _s(DEFAULT_LINE_PREFERENCE, "preference", "fit status names",
                                "a clean fit beats a mixed one beats an unconverged one; the deviance "
                                "decides within a group")


@dataclass(frozen=True)
class RunSettings:
    """How the run is cut up; these do not change a frame's result."""

    batch: int = _s(16, "integer", "frames", "frames per batch and checkpoint (a killed run loses at most "
                    "one batch; the refinement pads its rows to powers of two; at most 4096: the batch's polar images "
                    "and refinement rows stay in memory)", ge=1, le=4096)
    batches_in_flight: int = _s(2, "integer", "batches", "batches fitted at once in threads (one batch's template "
                                "search and linear stage run beside another's refinement; fits.scan.pipeline); "
                                "1: one after the other. Each batch in flight holds its polar images and "
                                "candidate model images", ge=1, le=16)
    cache_dir: str | None = _s(None, "path", "", "folder for the template bank cache (none: no cache)")


GROUPS = {"support": SupportSettings, "search": SearchSettings, "refine": RefineSettings,
          "evidence": EvidenceSettings, "neighbours": NeighbourSettings, "line": LineSettings,
          "run": RunSettings}


@dataclass(frozen=True)
class FitSettings:
    """All settings of the scan fit, by group (`GROUPS`); `of` builds one from flat keys."""

    support: SupportSettings = field(default_factory=SupportSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)
    evidence: EvidenceSettings = field(default_factory=EvidenceSettings)
    neighbours: NeighbourSettings = field(default_factory=NeighbourSettings)
    line: LineSettings = field(default_factory=LineSettings)
    run: RunSettings = field(default_factory=RunSettings)

    @classmethod
    def of(cls, source: str = "FitSettings.of", **values: Any) -> FitSettings:
        """Defaults with the flat keys ``values`` replaced (validated; ``source`` names them in errors)."""
        return cls().replace(source=source, **values)

    def replace(self, source: str = "FitSettings.replace", **values: Any) -> FitSettings:
        """A copy with the flat keys ``values`` replaced, each checked against its `Setting`.

        Raises
        ------
        ValueError
            For an unknown key (with the closest one) or a value of the wrong type or range,
            naming ``source``.
        """
        index = key_index()
        groups: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            if key not in index:
                close = difflib.get_close_matches(key, list(index), n=1, cutoff=0.6)
                hint = f" Did you mean fit.{close[0]}?" if close else ""
                raise ValueError(f"unknown fit setting {key!r} in {source}.{hint} Valid keys of [fit]: "
                                 f"{sorted(index)}.")
            group, spec = index[key]
            groups.setdefault(group, {})[key] = _coerce(value, spec, key, source)
        new = {g: dataclasses.replace(getattr(self, g), **kv) for g, kv in groups.items()}
        return dataclasses.replace(self, **new)

    def to_flat(self, fingerprint: bool = False) -> dict[str, Any]:
        """Flat key -> plain value (lists for tuples; TOML/JSON-ready; None as "").

        ``fingerprint``: leave out `NOT_FINGERPRINTED` keys (those that change no result).
        """
        out = {}
        for g in GROUPS:
            for f in dataclasses.fields(getattr(self, g)):
                if fingerprint and f.name in NOT_FINGERPRINTED:
                    continue
                out[f.name] = plain_value(getattr(getattr(self, g), f.name))
        return out


def key_index() -> dict[str, tuple[str, Setting]]:
    """Flat key -> (group, `Setting`) of every setting."""
    out = {}
    for g, cls in GROUPS.items():
        for f in dataclasses.fields(cls):
            out[f.name] = (g, f.metadata["setting"])
    return out


def default_of(key: str) -> Any:
    """The default value of the flat key ``key``."""
    group, _ = key_index()[key]
    return getattr(getattr(FitSettings(), group), key)


def describe() -> list[tuple[str, str, Any, str, str]]:
    """(key, group, default, unit, reason) of every setting, for docs and ``--help``."""
    return [(k, g, plain_value(default_of(k)), s.unit, s.reason) for k, (g, s) in key_index().items()]


def settings_from_config(cfg, base: FitSettings | None = None) -> FitSettings:
    """`FitSettings` from the ``[fit]`` table of a loaded config (files and ``--set fit.KEY=VALUE``).

    ``cfg.fit`` holds the raw values and ``cfg.fit_sources`` where each came from
    (`xmodel.config.load_config`); errors name that source.
    """
    out = base or FitSettings()
    raw = dict(getattr(cfg, "fit", {}) or {})
    sources = dict(getattr(cfg, "fit_sources", {}) or {})
    for key, value in raw.items():
        out = out.replace(source=sources.get(key, "[fit]"), **{key: value})
    return out


def differing_keys(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ between two flat dicts (missing on one side counts)."""
    keys = sorted(set(stored) | set(current))
    return [k for k in keys if plain_value(stored.get(k, "<missing>")) != plain_value(current.get(k, "<missing>"))]


# --------------------------------------------------------------------------- command line

#: the options ``xmodel fit`` offers directly (all others: --set fit.KEY=VALUE)
FIT_CLI_KEYS = ("step_deg", "batch", "max_iter", "cache_dir")
#: the options ``xmodel boundary`` offers directly
BOUNDARY_CLI_KEYS = ("max_iter",)


#: command-line flags that are not ``--key-name`` (the shared CLI convention for batches)
CLI_FLAGS = {"batch": "--batch-size"}
#: the ``source`` of values given as command-line options (errors then name the option)
CLI_SOURCE = "the command line"


def cli_flag(key: str) -> str:
    """The command-line option of the flat key ``key`` (``batch`` -> ``--batch-size``)."""
    return CLI_FLAGS.get(key, "--" + key.replace("_", "-"))


def add_cli_options(parser, keys: tuple[str, ...]) -> None:
    """Add ``--key-name`` options for ``keys``: no default of their own (None = the setting's),
    the help text from the setting's unit, reason and default."""
    index = key_index()
    types = {"number": float, "integer": int, "path": str}
    for key in keys:
        _, spec = index[key]
        default = plain_value(default_of(key))
        parser.add_argument(cli_flag(key), dest="fit_" + key, type=types[spec.kind], default=None,
                            metavar=key.upper(),
                            help=f"{spec.reason} ({spec.unit + ', ' if spec.unit else ''}default "
                                 f"{default if default != '' else 'none'}; also --set fit.{key}=VALUE)")


def apply_cli(settings: FitSettings, args, keys: tuple[str, ...]) -> FitSettings:
    """``settings`` with the options of `add_cli_options` that were given on the command line."""
    given = {k: getattr(args, "fit_" + k) for k in keys if getattr(args, "fit_" + k, None) is not None}
    return settings.replace(source=CLI_SOURCE, **given) if given else settings


# --------------------------------------------------------------------------- values


def plain_value(value: Any) -> Any:
    """A setting as TOML/JSON writes it: lists for tuples, "" for None, "inf" for infinity."""
    if isinstance(value, (tuple, list)):
        return [plain_value(v) for v in value]
    if value is None:
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _fail(key: str, value: Any, spec: Setting, source: str, why: str = "") -> ValueError:
    """``fit.KEY = VALUE in SOURCE: expected ...; the default is D.`` (on the command line:
    ``fit.KEY (--option) = VALUE on the command line: ...``)."""
    shown = _show(value)
    if len(shown) > 40:                               # 1e400 written out as an integer
        shown = f"{shown[:12]}... ({len(shown)} digits)" if isinstance(value, int) else f"{shown[:40]}..."
    where = f"fit.{key} ({cli_flag(key)}) = {shown} on {source}" if source == CLI_SOURCE else \
        f"fit.{key} = {shown} ({_type_name(value)}) in {source}"
    default = plain_value(default_of(key))
    example = f"; the default is {default!r}" if spec.kind in ("number", "integer", "pair") else ""
    return ValueError(f"{where}: expected {spec.expected()}{why}{example}.")


def _coerce(value: Any, spec: Setting, key: str, source: str) -> Any:
    """Check ``value`` against ``spec``; returns it in the dataclass's form (tuples, None)."""
    kind, given = spec.kind, value
    if kind in ("number", "integer"):
        if isinstance(value, str) and value in ("inf", "-inf") and kind == "number":
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(key, value, spec, source)
        if kind == "integer":
            if isinstance(value, float) and not value.is_integer():
                raise _fail(key, value, spec, source)
            value = int(value)
            if value > 2 ** 62 or not spec.accepts(float(value)):
                raise _fail(key, given, spec, source)
            return value
        try:
            value = float(value)
        except OverflowError:                       # an integer beyond the float range
            raise _fail(key, given, spec, source) from None
        if not spec.accepts(value):
            raise _fail(key, given, spec, source)
        return value
    if kind == "pair":
        try:
            if isinstance(value, (str, bytes)) or len(value) != 2:
                raise ValueError
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError, OverflowError):
            raise _fail(key, value, spec, source) from None
        inner = dataclasses.replace(spec, le=None)
        outer = dataclasses.replace(spec, gt=None, ge=None)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and inner.accepts(lo) and outer.accepts(hi)):
            raise _fail(key, value, spec, source)
        return (lo, hi)
    if kind == "names":
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value \
                or not all(isinstance(v, str) for v in value):
            raise _fail(key, value, spec, source)
        from fits.parameters import NAMES  # imported here: the parser stays free of JAX

        unknown = [v for v in value if v not in NAMES]
        repeated = sorted({v for v in value if list(value).count(v) > 1})
        if unknown or repeated:
            why = (f"; {unknown} are not fit parameters (valid: {list(NAMES)})" if unknown else
                   f"; {repeated} listed more than once")
            raise _fail(key, value, spec, source, why)
        return tuple(value)
    if kind == "path":
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise _fail(key, value, spec, source)
        return value
    if kind == "zones":
        out = []
        try:
            for z in value:
                b = tuple(float(x) for x in z[0])
                r = tuple(float(x) for x in z[1]) if len(z) > 1 and z[1] not in (None, "", []) else None
                if len(b) != 3 or (r is not None and len(r) != 3) or not any(b):
                    raise ValueError
                out.append((b, r))
        except (TypeError, ValueError, IndexError):
            raise _fail(key, value, spec, source) from None
        if not out:
            raise _fail(key, value, spec, source)
        return tuple(out)
    if kind == "preference":
        names = {s.name.lower() for s in FitStatus}
        try:
            groups = tuple(tuple(str(n).lower() for n in g) for g in value)
        except TypeError:
            raise _fail(key, value, spec, source) from None
        bad = [n for g in groups for n in g if n not in names]
        if bad or not groups or isinstance(value, str):
            raise ValueError(f"fit.{key} = {value!r} in {source}: unknown fit status names {bad}; valid are "
                             f"{sorted(names)}.")
        return groups
    raise AssertionError(kind)
