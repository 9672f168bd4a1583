"""Regenerate docs/configuration.md from the schema in xmodel/config.py and fits/scan/settings.py,
and configs/fit.toml (the [fit] table with every key at its default).

Run: python docs/make_config_reference.py
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from fits.scan import settings as fit_settings
from xmodel import config

TABLES = {"beam": config.BeamConfig, "detector": config.DetectorConfig, "mask": config.MaskConfig,
          "model": config.ModelConfig, "superlattice": config.SuperlatticeConfig,
          "nanocrystal": config.NanocrystalConfig, "atomic_lattice": config.AtomicLatticeConfig,
          "background": config.BackgroundConfig}

#: prose printed under a table's key list
NOTES = {
    "model": (
        "`sl_peak_weighting` says how the NC size distribution weighs the superlattice Bragg peaks. "
        "`\"decoupling\"`: a crystal of randomly sized spheres on its sites gives "
        "`I(q) = N [ |<F>|^2 S(q) + <|F|^2> - |<F>|^2 ]` (decoupling approximation: Kotlarchyk & Chen, "
        "J. Chem. Phys. 79, 2461 (1983); Pedersen, J. Appl. Cryst. 27, 595 (1994)), so the peaks go as "
        "`B(q) = |<V Phi(qR)>|^2 / <V>^2` and the size variance is a diffuse term about 1e-4 of a peak "
        "(not modelled; the isotropic `diffuse_scale * P(q)` term stands for the disordered NCs). "
        "`\"average\"` (the default for now): the peaks go as `P(q) = <V^2 Phi^2> / <V^2>`, the weighting of "
        "earlier versions; the physics says `\"decoupling\"`, and the default will follow once the scan fit's "
        "search is robust to it (a Conf2 test frame that is fragile under either weighting fits an alias "
        "under it with the test's noise draw). "
        "For a radius of 34 +- 2.5 A, B/P - 1 is +4 % at 200_SL, -21 % at 220_SL and -30 % at 0.25 1/A. "
        "The real-space simulator (`xmodel.realspace`, docs/realspace.md) follows the decoupling weighting. "
        "`form_factor_nsigma` truncates the Gaussian radius distribution; 6 converges (P within 1e-7 of "
        "the untruncated average), 3 reproduces sasmodels' default cut (1.8 % off near the first minimum) and is the model's default "
        "for now: the scan fit's template search picks an alias on some frames with the converged P(q), "
        "so it follows when the search is robust to it. "
        "`sl_peak_shape` sets the SL peaks' widths and normalisation (`xmodel.pattern.sl_peak_widths`): "
        "`\"mosaic\"` (the default, the model of earlier versions) has the radial sigma `radial_width`, "
        "the tangential `|G| mosaic`, and the height `peak_scale` whatever the widths; `\"crystal\"` is "
        "the peak of a finite mosaic grain: `radial_width` is the grain's isotropic (Scherrer) width, "
        "the tangential sigma is `sqrt(radial_width^2 + (|G| mosaic)^2)`, the radial one grows as "
        "`sqrt(radial_width^2 + (sl_paracrystal |G|^2)^2)` (a paracrystal, Hosemann & Bagchi 1962), "
        "and each reflection keeps its integrated intensity: the height is `peak_scale` times "
        "`sigma_ref^3 / (sigma_r sigma_t^2)`, `sigma_ref = 2e-3 1/A`. `sl_paracrystal` must be 0 with "
        "`\"mosaic\"`. `sl_peak_tail` (eta, 0 to 1) gives the SL peaks' profile across the Ewald sphere "
        "(along its normal, out of the detector plane) a Lorentzian share: a pseudo-Voigt of the "
        "Gaussian's half width (`xmodel.pattern.across_sphere_profile`), the tails a finite grain's "
        "shape transform has along the sphere's normal, which set how a cut reflection's intensity "
        "falls with its excitation error and so the fitted tilts; in the detector plane the peak stays "
        "Gaussian. 0 (the default) is the Gaussian peak; with `\"crystal\"` the height is divided by "
        "the profile's integral relative to the Gaussian's."),
}


def main() -> str:
    lines = ["# Configuration reference", "",
             "Generated from `xmodel/config.py` by `docs/make_config_reference.py`; do not edit by hand.", "",
             "TOML files are merged in order (experiment, then sample), key by key inside each table; "
             "`--set table.key=value` overrides come last (values parsed as TOML, a bare word as a string). "
             "Relative paths are resolved against the TOML file that names them. "
             "An unknown key, a wrong type or an out-of-range value is an error naming the key and the file.", "",
             "Top level: `name` (string, default: the stem of the last file).", ""]
    for table, cls in TABLES.items():
        lines += [f"## [{table}]", "", (cls.__doc__ or "").strip().splitlines()[0], "",
                  "| key | default | accepts |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            check = f.metadata.get("check")
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
            accepts = check.expected() if check is not None else ""
            lines.append(f"| `{f.name}` | `{default!r}` | {accepts} |")
        lines.append("")
        if table in NOTES:
            lines += [NOTES[table], ""]
    lines += fit_table()
    return "\n".join(lines)


def fit_table() -> list[str]:
    """The ``[fit]`` table: every tuning number of the scan fit (`fits.scan.settings`)."""
    lines = ["## [fit]", "",
             "Tuning of the scan fit (`xmodel fit`, `xmodel boundary`; `fits/scan/settings.py`). Every number "
             "that steers the fit is a key here, with its unit and the reason for its default. Precedence: "
             "these defaults, then the `[fit]` tables of the config files in order, then "
             "`--set fit.KEY=VALUE`, then the command-line options `--step-deg`, `--batch-size`, `--max-iter`, "
             "`--cache-dir` (which have no defaults of their own). The settings and the resolved config are "
             "stored with the results (`/entry/fits` attributes `settings`, `config`); a resumed run must "
             "use the same ones (all keys but `cache_dir`), or it is refused with the differing keys named. "
             "An example: `configs/fit.toml`.", ""]
    for group, cls in fit_settings.GROUPS.items():
        lines += [f"### {group}", "", (cls.__doc__ or "").strip().splitlines()[0], "",
                  "| key | default | unit | why this value |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            spec = f.metadata["setting"]
            default = fit_settings.default_of(f.name)
            lines.append(f"| `{f.name}` | `{fit_settings.plain_value(default)!r}` | {spec.unit} | "
                         f"{spec.reason}; accepts {spec.expected().removesuffix(f' ({spec.unit})')} |")
        lines.append("")
    return lines


def fit_toml() -> str:
    """configs/fit.toml: the ``[fit]`` table with every key at its default and its reason."""
    def toml(v):
        if isinstance(v, list):
            return "[" + ", ".join(toml(x) for x in v) + "]"
        return json.dumps(v) if isinstance(v, str) else repr(v)

    lines = ["# The [fit] table with every tuning number of the scan fit at its default (fits/scan/settings.py,",
             "# docs/configuration.md). Pass it after the experiment and sample configs and edit what you",
             "# need, e.g. `xmodel fit results.h5 --config configs/experiment/p10_eiger4m.toml",
             "# --config configs/domains/red.toml --config configs/fit.toml --out fits.h5`; one key can also",
             "# be set with --set fit.KEY=VALUE. A resumed run must use the same values.", "", "[fit]"]
    for group, cls in fit_settings.GROUPS.items():
        lines.append(f"# {group}: {cls.__doc__.strip().splitlines()[0]}")
        for f in dataclasses.fields(cls):
            spec = f.metadata["setting"]
            v = fit_settings.plain_value(fit_settings.default_of(f.name))
            if f.name == "zones":                      # a zone without a reference: [b]
                v = [[z[0]] if z[1] == "" else z for z in v]
            if f.name == "cache_dir":
                lines.append(f'# {f.name} = "cache"   # {spec.reason}; none by default')
                continue
            unit = f" ({spec.unit})" if spec.unit else ""
            lines.append(f"{f.name} = {toml(v)}   #{unit} {spec.reason}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    out = Path(__file__).with_name("configuration.md")
    out.write_text(main())
    print(f"wrote {out}")
    toml_path = Path(__file__).resolve().parents[1] / "configs" / "fit.toml"
    toml_path.write_text(fit_toml())
    print(f"wrote {toml_path}")
