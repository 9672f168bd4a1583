"""Cramer-Rao bounds against Monte Carlo refits for the five domains at the paper's exposure.

Usage: python benchmarks/study_mc.py [--n 100] [--seed 0] [--grid polar] [--search-n 0]
       [--domains red,purple,...] [--json out.json]

For every domain (configs/experiment/p10_eiger4m.toml + configs/domains/<name>.toml) the scales
are those of the twin (configs/twin.toml: ``N = flux_photons_per_s * exposure_s`` incident
photons times the ``[efficiency]`` values, so 0.3 s at 1e10 photons/s), passed to the study as
``--set`` overrides. The marginal Cramer-Rao bounds of the parameters a scan fit refines are
compared with the standard deviation of N refits of Poisson replicates by the scan refinement
started at the truth (`fits.study.montecarlo`), and with ``--search-n M`` also with M refits by
the whole scan fit including its template search. Prints a Markdown table (the one in
docs/studies.md), the ratio MC std / CRLB, the equivalent ``xmodel study`` command, the machine
and the wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
import tomllib

import numpy as np

from fits.study.result import study
from xmodel.config import CONFIG_DIR, DOMAINS, EXPERIMENT_TOML, load_config
from xmodel.twin import load_twin

#: the parameters the done-when criterion is about
KEY = ("lattice_constant", "inplane_deg", "tilt1_deg", "tilt2_deg", "disorder_deg")


def twin_overrides(exposure_s: float = 0.3) -> list[str]:
    """``--set`` overrides giving a domain config the twin's counts at ``exposure_s``."""
    path = CONFIG_DIR / "twin.toml"
    with open(path, "rb") as f:
        flux = tomllib.load(f)["beam"]["flux_photons_per_s"]
    n = flux * exposure_s                       # incident photons per frame, as in xmodel.twin
    e = load_twin(path).efficiency
    return [f"superlattice.peak_scale={n * e['sl_peak']:.6g}", f"superlattice.diffuse_scale={n * e['diffuse']:.6g}",
            f"atomic_lattice.peak_scale={n * e['al_peak']:.6g}", f"background.constant={n * e['background']:.6g}",
            f"beam.exposure_s={exposure_s:g}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="replicates refitted from the truth per domain")
    ap.add_argument("--search-n", type=int, default=0, help="replicates refitted by the scan fit with its search")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", default="polar")
    ap.add_argument("--domains", default=",".join(DOMAINS))
    ap.add_argument("--json", default=None, help="also write every result as JSON here")
    args = ap.parse_args(argv)
    sets = twin_overrides()
    t_all = time.perf_counter()
    docs = {}
    rows = ["| domain | parameter | unit | value | CRLB (marginal) | CRLB (conditional) | MC std (truth start) "
            "| ratio | MC bias | MC std (search start) | ratio |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.domains.split(","):
        t = time.perf_counter()
        cfg = load_config([EXPERIMENT_TOML, CONFIG_DIR / "domains" / f"{name}.toml"], sets)
        r = study(cfg, grid=args.grid, monte_carlo_n=args.n, seed=args.seed)
        if args.search_n:
            rs = study(cfg, grid=args.grid, monte_carlo_n=args.search_n, seed=args.seed + 1, starts=("search",),
                       cache_dir=os.path.expanduser("~/.cache/xmodel"))
            r = type(r)(**{**r.__dict__, "monte_carlo": {**r.monte_carlo, **rs.monte_carlo}})
        docs[name] = r.to_dict()
        mc = r.monte_carlo["truth"]
        for j, p in enumerate(r.names):
            std, bias = mc.of(p)
            crlb = r.fisher.crlb[j]
            s_std = r.monte_carlo["search"].of(p)[0] if "search" in r.monte_carlo else np.nan
            mark = "**" if p in KEY else ""
            rows.append(f"| {name} | {mark}{p}{mark} | {r.units[j]} | {r.values[j]:.6g} | {crlb:.3g} | "
                        f"{r.fisher.crlb_conditional[j]:.3g} | {std:.3g} | {std / crlb:.2f} | {bias:.2g} | "
                        + (f"{s_std:.3g} | {s_std / crlb:.2f} |" if np.isfinite(s_std) else "- | - |"))
        used = f"{mc.n_used}/{mc.n}" + (f", search {r.monte_carlo['search'].n_used}/{r.monte_carlo['search'].n}"
                                        if "search" in r.monte_carlo else "")
        print(f"{name}: {time.perf_counter() - t:.0f} s, fits used {used}, unidentifiable {r.fisher.unidentifiable}",
              file=sys.stderr, flush=True)
    print("\n".join(rows))
    setset = " ".join(f"--set {s}" for s in sets)
    print(f"\nequivalent command per domain: xmodel study {EXPERIMENT_TOML.relative_to(CONFIG_DIR.parent)} "
          f"configs/domains/<name>.toml {setset} --grid {args.grid} --monte-carlo {args.n} --seed {args.seed}")
    print(f"benchmark: python {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"wall time {time.perf_counter() - t_all:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(docs, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
