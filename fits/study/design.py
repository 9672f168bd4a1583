"""Experiment design scans: Cramer-Rao bounds as functions of one or two settings.

A setting is varied by ``KEY=LO:HI:N`` (N evenly spaced values from LO to HI, both included)
or ``KEY={V1;V2;...}`` (listed TOML values, e.g. zone axes). Keys are

* ``exposure_s``: the exposure of the frame (s), scaling every count (`fits.study.problem`);
  ``beam.exposure_s`` means the same;
* any numeric config key ``table.key`` (``detector.distance_m``, ``beam.energy_kev``,
  ``superlattice.tilt1_deg``, ``atomic_lattice.disorder_fwhm_deg``, ...);
* one element of a numeric vector key, ``table.key[i]`` (``detector.beam_center_px[1]``, the
  beam centre's column);
* with the list form, any config key (``superlattice.beam_direction={[0,0,1];[1,1,0]}``,
  ``atomic_lattice.configuration={conf1;conf2}``).

Each value (with two settings, each pair of values) is applied as a ``--set`` override to the
configs and the study (`fits.study.result.study`) is repeated; points that differ only in the
exposure share one model.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from fits.study.problem import StudyProblem, at_exposure
from fits.study.result import StudyResult, result_of
from xmodel.parameters import params_from_config

EXPOSURE_KEYS = ("exposure_s", "beam.exposure_s")
_ELEMENT = re.compile(r"^(\w+)\.(\w+)\[(\d+)\]$")


@dataclass(frozen=True)
class Setting:
    """One varied setting: its key and the values it takes (numbers, or TOML values)."""

    key: str
    values: tuple

    @property
    def numeric(self) -> bool:
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values)

    def label(self, v) -> str:
        return f"{v:.6g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def valid_keys(cfg) -> list[str]:
    """Keys `parse_vary` accepts for ``cfg`` (numbers and elements of numeric vectors)."""
    keys = ["exposure_s"]
    for table, values in cfg.to_dict().items():
        if not isinstance(values, dict):
            continue
        for key, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(f"{table}.{key}")
            elif isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                keys += [f"{table}.{key}[{i}]" for i in range(len(v))]
    return keys


def _all_keys(cfg) -> list[str]:
    return [f"{t}.{k}" for t, v in cfg.to_dict().items() if isinstance(v, dict) for k in v]


def parse_vary(text: str, cfg) -> Setting:
    """A ``--vary`` argument as a `Setting`, checked against ``cfg``'s keys.

    Raises
    ------
    ValueError
        Without ``=``, for an unknown key (the message lists the valid ones), for a range that
        is not ``LO:HI:N`` with N >= 2, or a list that is not ``{V1;V2;...}`` of TOML values.
    """
    if "=" not in text:
        raise ValueError(f"--vary {text!r} has no '='; write KEY=LO:HI:N (e.g. detector.distance_m=0.3:0.6:7) "
                         "or KEY={V1;V2;...} (e.g. superlattice.beam_direction={[0,0,1];[1,1,0]})")
    key, spec = (s.strip() for s in text.split("=", 1))
    if key == "beam.exposure_s":
        key = "exposure_s"
    listed = spec.startswith("{") and spec.endswith("}")
    keys = valid_keys(cfg)
    ok = key in keys or (listed and key in _all_keys(cfg))
    if not ok:
        from difflib import get_close_matches
        near = get_close_matches(key, keys + _all_keys(cfg), n=1)
        hint = f" Perhaps you meant {near[0]!r}?" if near else ""
        raise ValueError(f"--vary: unknown or non-numeric setting {key!r}.{hint} Valid keys are {keys} "
                         "(and, with the list form KEY={V1;V2}, any config key)")
    if listed:
        values = []
        for raw in spec[1:-1].split(";"):
            raw = raw.strip()
            try:
                values.append(tomllib.loads(f"v = {raw}")["v"])
            except tomllib.TOMLDecodeError:
                if not re.fullmatch(r"[\w./-]+", raw):
                    raise ValueError(f"--vary {text!r}: {raw!r} is not a TOML value; write lists as [1,1,0], "
                                     "numbers as 0.3, words as conf1") from None
                values.append(raw)
        if len(values) < 1 or values == [""]:
            raise ValueError(f"--vary {text!r}: the list holds no value; write KEY={{V1;V2;...}}")
        return Setting(key, tuple(tuple(v) if isinstance(v, list) else v for v in values))
    parts = spec.split(":")
    try:
        lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError(f"--vary {text!r}: the range {spec!r} is not LO:HI:N (two numbers and a count), "
                         "e.g. detector.distance_m=0.3:0.6:7") from None
    if n < 2 or not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"--vary {text!r}: N = {n} must be at least 2 and LO, HI finite")
    return Setting(key, tuple(float(v) for v in np.linspace(lo, hi, n)))


def _toml(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_toml(x) for x in v) + "]"
    return repr(float(v)) if isinstance(v, float) else str(v)


def override_for(setting_key: str, value, cfg) -> str | None:
    """The ``--set`` override that gives ``setting_key`` the value ``value`` (None for the exposure)."""
    if setting_key in EXPOSURE_KEYS:
        return None
    m = _ELEMENT.match(setting_key)
    if m:
        table, key, i = m.group(1), m.group(2), int(m.group(3))
        vec = list(cfg.to_dict()[table][key])
        vec[i] = value
        return f"{table}.{key}={_toml(vec)}"
    return f"{setting_key}={_toml(value)}"


@dataclass(frozen=True)
class DesignResult:
    """Bounds over a grid of settings.

    Attributes
    ----------
    settings : the varied `Setting` list (one or two).
    points : tuples of values, one per study, in row-major order of ``settings``.
    results : the `StudyResult` of each point.
    """

    settings: tuple[Setting, ...]
    points: tuple[tuple, ...]
    results: tuple[StudyResult, ...]

    def crlb(self, name: str) -> np.ndarray:
        """Marginal bound of ``name`` over the grid, shape ``(len(values) for each setting)``."""
        shape = tuple(len(s.values) for s in self.settings)
        return np.array([r.crlb[name] for r in self.results]).reshape(shape)

    def to_dict(self) -> dict:
        return {"vary": [{"key": s.key, "values": [list(v) if isinstance(v, tuple) else v for v in s.values]}
                         for s in self.settings],
                "points": [{"settings": {s.key: (list(v) if isinstance(v, tuple) else v)
                                         for s, v in zip(self.settings, p)}, **r.to_dict()}
                           for p, r in zip(self.points, self.results)]}

    def table(self) -> str:
        names = self.results[0].names
        head = " ".join(f"{s.key:>22}" for s in self.settings) + " " + " ".join(f"{n:>16}" for n in names)
        lines = ["marginal Cramer-Rao bounds (edge units)", head]
        for p, r in zip(self.points, self.results):
            lines.append(" ".join(f"{s.label(v):>22}" for s, v in zip(self.settings, p)) + " " +
                         " ".join(f"{r.crlb[n]:>16.4g}" for n in names))
        return "\n".join(lines)

    def plot(self, path: str | Path, names: Sequence[str] | None = None) -> Path:
        """Bounds against the first setting (one line per value of the second), one panel per parameter."""
        from matplotlib.figure import Figure

        names = list(names or self.results[0].names)
        s0 = self.settings[0]
        x = np.arange(len(s0.values)) if not s0.numeric else np.array(s0.values, float)
        ncol = min(3, len(names))
        nrow = -(-len(names) // ncol)
        fig = Figure(figsize=(4.2 * ncol, 3.2 * nrow))
        axes = fig.subplots(nrow, ncol, squeeze=False)
        for ax, n in zip(axes.ravel(), names):
            b = self.crlb(n)
            if b.ndim == 1:
                ax.plot(x, b, "o-")
            else:
                s1 = self.settings[1]
                for k, v in enumerate(s1.values):
                    ax.plot(x, b[:, k], "o-", label=f"{s1.key} = {s1.label(v)}")
                ax.legend(fontsize=7)
            unit = self.results[0].units[self.results[0].names.index(n)]
            ax.set_yscale("log")
            ax.set_title(f"{n}", fontsize=9)
            ax.set_ylabel(f"marginal CRLB ({unit})", fontsize=8)
            ax.set_xlabel(s0.key, fontsize=8)
            if not s0.numeric:
                ax.set_xticks(x, [s0.label(v) for v in s0.values], fontsize=7)
            ax.grid(alpha=0.3)
        for ax in axes.ravel()[len(names):]:
            ax.axis("off")
        fig.suptitle(f"{self.results[0].config}: Cramer-Rao bounds ({self.results[0].grid} grid)", fontsize=10)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        return path


def design_scan(paths: Sequence[str | Path], overrides: Sequence[str], vary: Sequence[str],
                names: Sequence[str] | None = None, *, grid: str = "polar",
                exposure_s: float | None = None) -> DesignResult:
    """Repeat the study over the grid of the ``vary`` settings (module docstring).

    Parameters
    ----------
    paths, overrides : config files and ``--set`` overrides (`xmodel.config.load_config`).
    vary : one or two ``KEY=LO:HI:N`` / ``KEY={V1;V2}`` strings.
    names, grid, exposure_s : as in `fits.study.result.study`.

    Raises
    ------
    ValueError
        No or more than two settings, a bad setting (`parse_vary`), or a config that a value
        makes invalid (the config's own error, naming the override).
    """
    from xmodel.config import load_config

    base = load_config(paths, overrides)
    if not 1 <= len(vary) <= 2:
        raise ValueError(f"a design scan varies one or two settings, not {len(vary)}; pass --vary once or twice")
    settings = tuple(parse_vary(v, base) for v in vary)
    points, results = [], []
    problems: dict[tuple[str, ...], StudyProblem] = {}
    for values in itertools.product(*(s.values for s in settings)):
        extra, t = [], exposure_s
        for s, v in zip(settings, values):
            o = override_for(s.key, v, base)
            if o is None:
                t = float(v)
            else:
                extra.append(o)
        key = tuple(extra)
        if key not in problems:          # an exposure change reuses the model (and its compiled Jacobian)
            problems[key] = StudyProblem.from_config(load_config(paths, list(overrides) + extra), names, grid)
        p = problems[key]
        t = float(p.config.beam.exposure_s if t is None else t)
        if not (np.isfinite(t) and t > 0):
            raise ValueError(f"exposure_s = {t!r} must be a positive number of seconds")
        p = dataclasses.replace(p, exposure_s=t, truth=at_exposure(
            params_from_config(p.config, dtype=jnp.float64), t / p.config.beam.exposure_s))
        points.append(values)
        results.append(result_of(p))
    return DesignResult(settings, tuple(points), tuple(results))
