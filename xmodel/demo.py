"""``xmodel demo``: the paper's analysis end to end on a synthetic sample, with a report.

Stages (each writes into ``out`` and appends to ``report.md``):

1. the five domain patterns of the paper simulated on the P10 Eiger 4M (Fig. 1d-m, 2f-j, S4);
2. the demo digital twin (configs/demo.toml) synthesised as an Eiger scan, reduced to polar
   images, mapped at q_SL = 0.083 and q_AL = 2.12 1/A (Fig. 1a,b in grey levels), with the
   polar image and radial profile of every domain;
3. the analyses: domain classification (Fig. 1a,b), the q200 map (Fig. 3a), the Table S1 and
   S2 analogues, the CCF of every domain against the forward model (Fig. 2a-e) and the facet
   table (Fig. 5);
4. the per-frame fits of the scan and the recovered-vs-true table;
5. one frame of the realistic twin (the same layout rendered by the independent real-space
   simulator, `xmodel.realspace`) reduced and fitted like the scan, beside its fit and residual.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from xmodel.config import CONFIG_DIR, default_paths, load_config
from xmodel.experiment import beam_center_px
from xmodel.figures import miller_label, plot_pattern
from xmodel.peaks import format_table
from xmodel.simulate import Simulation, simulate_counts, write_pattern

DOMAINS = ("red", "purple", "yellow", "green", "orange")
#: rings the paper correlates (main text, XCCA): q1 = 200_SL for yellow and red, 311_SL otherwise
CCF_Q1 = {"red": 0.0838, "yellow": 0.0838, "purple": 0.139, "green": 0.139, "orange": 0.139}


class Report:
    """Markdown report assembled stage by stage."""

    def __init__(self, out: Path):
        self.out = out
        self.lines: list[str] = []
        self.t0 = time.perf_counter()

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def stage(self, title: str) -> None:
        print(f"== {title} ({time.perf_counter() - self.t0:.0f} s)", flush=True)
        self.add(f"## {title}", "")

    def write(self) -> Path:
        path = self.out / "report.md"
        path.write_text("\n".join(self.lines) + "\n")
        return path


def run_demo(out: Path, binning: int | None = None, seed: int = 0, scan: bool = True,
             fit_frames: int = 0) -> Path:
    """Run every stage into ``out``; returns the report path.

    ``fit_frames``: about this many frames of the scan are fitted (0: all of them).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(out)
    rep.add("# xmodel demo", "",
            "Synthetic data modelled on Mukharamova et al. (PbS nanocrystal superlattices, P10, "
            "13.8 keV, Eiger 4M at 0.41 m). Every number below is recomputed by this run.", "")
    domain_patterns(out, rep, binning, seed)
    if scan:
        results, truth = scan_stage(out, rep)
        analyses_stage(out, rep, results, truth)
        setup, settings = fits_stage(out, rep, results, truth, fit_frames)
        realistic_frame_stage(out, rep, results, setup, settings)
    path = rep.write()
    print(f"wrote {path} ({time.perf_counter() - rep.t0:.0f} s in all)")
    return path


# --------------------------------------------------------------------------- stage 1


def domain_patterns(out: Path, rep: Report, binning: int | None, seed: int) -> None:
    """The five domain patterns: HDF5, PNG, reflection tables."""
    rep.stage("1. The five domains of the paper, one simulated pattern each")
    rep.add("Poisson counts of one 0.3 s frame per domain (configs/domains/*.toml), beam along the "
            "zone axis of Fig. S4; SAXS enlarged in the inset, reflections labelled.", "")
    for i, name in enumerate(DOMAINS):
        t0 = time.perf_counter()
        cfg = load_config(default_paths(name))
        sim = Simulation.from_config(cfg, binning=binning)
        counts = simulate_counts(sim.expected(), ~sim.experiment.mask, None, seed + i)
        refl = sim.reflections()
        write_pattern(out / f"{name}.h5", counts, sim, noisy=True, seed=seed + i, reflections=refl)
        title = (f"{name}: beam along " + miller_label(cfg.superlattice.beam_direction, "SL")
                 + f", {cfg.atomic_lattice.configuration}")
        plot_pattern(counts, sim.experiment.mask, beam_center_px(sim.experiment.geometry),
                     out / f"{name}.png", reflections=refl, title=title)
        table = format_table(refl)
        (out / f"{name}_reflections.txt").write_text(table + "\n")
        (out / f"{name}_reflections.json").write_text(json.dumps(refl, indent=1))
        n_sl = sum(r["lattice"] == "SL" for r in refl)
        n_al = sum(r["lattice"] == "AL" for r in refl)
        print(f"   [{i + 1}/{len(DOMAINS)}] {name}: {n_sl} SL and {n_al} AL reflections on the detector "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        rep.add(f"### {name}", "",
                f"Beam along {list(cfg.superlattice.beam_direction)} (SL), {cfg.atomic_lattice.configuration}, "
                f"a = {cfg.superlattice.lattice_constant} A, dPhi = {cfg.atomic_lattice.disorder_fwhm_deg} deg "
                f"(FWHM); {n_sl} SL and {n_al} AL reflections on the detector.", "",
                f"![{name}]({name}.png)", "", "```", table, "```", "")


# --------------------------------------------------------------------------- stage 2


def scan_stage(out: Path, rep: Report) -> tuple[Path, Path]:
    """Synthesise and reduce the demo scan; intensity maps; per-domain polar images."""
    from xmodel import maps
    from xmodel.io import open_scan
    from xmodel.positions import read_monitor, read_positions
    from xmodel.reduction import default_bins, reduce_scan
    from xmodel.synth import synthesize

    rep.stage("2. A scan of the digital twin: synthesis, reduction, intensity maps")
    scan_dir = out / "scan"
    master = scan_dir / "demo_master.h5"
    if not master.exists():
        master = synthesize([CONFIG_DIR / "demo.toml"], scan_dir, progress=True)
    results = out / "results.h5"
    with open_scan(master) as s:
        bins = default_bins(s.geometry, s.mask, n_q=500, n_chi=360, q_spacing="log")
        n_frames = s.n_frames
    # positions and monitor live in the scan file beside the master, as at the beamline
    positions = read_positions(scan_dir / "demo.fio", n_frames)
    reduce_scan(master, results, bins=bins, progress=True, positions_um=positions,
                monitor=read_monitor(f"{scan_dir / 'demo.fio'}:monitor", n_frames),
                positions_source=str(scan_dir / "demo.fio"))
    shape = maps.scan_grid(results)
    truth = scan_dir / "truth.h5"
    with h5py.File(truth, "r") as f:
        step = float(np.median(np.diff(np.unique(f["/truth/positions_um"][:, 1]))))
        label = f["/truth/label"][()]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["/truth/label_names"][()]]
        empty, mixed = f["/truth/empty"][()], f["/truth/mixed"][()]
    rep.add(f"`xmodel synth configs/demo.toml` wrote {n_frames} Eiger 4M frames ({shape[0]} x {shape[1]} "
            f"points, {step:g} um steps) to `scan/`, with the ground truth in `scan/truth.h5`; "
            f"`xmodel reduce` wrote 360 x 500 polar images (log-spaced q) to `results.h5`.", "")
    for q0, hw, tag in ((0.083, 0.004, "q_SL = 0.083"), (2.12, 0.05, "q_AL = 2.12")):
        values = maps.ring_intensity(results, q0, hw)
        png = f"map_q{q0:g}.png"
        maps.plot_map(values, shape, out / png, title=f"intensity at {tag} 1/A", step_um=step)
        rep.add(f"![{tag}]({png})")
    rep.add("", "Per domain (in-domain, unmixed points of the truth), the mean polar image and radial profile:", "")
    with h5py.File(results, "r") as f:
        q = f["/entry/reduction/q"][()]
        chi = f["/entry/reduction/chi"][()]
    for k, name in enumerate(names):
        frames = np.flatnonzero((label == k) & ~empty & ~mixed)
        if frames.size == 0:
            continue
        polar, radial = maps.average_frames(results, frames)
        png = f"domain_{name}_polar.png"
        maps.plot_polar_and_radial(polar, radial, q, chi, out / png, title=f"{name} ({frames.size} points)")
        rep.add(f"![{name}]({png})")
    rep.add("")
    return results, truth


# --------------------------------------------------------------------------- stage 3


def _cli_json(args: list[str]) -> dict:
    """Run an ``xmodel`` subcommand in-process and parse its JSON output."""
    import contextlib
    import io

    from xmodel.cli import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(args)
    if rc != 0:
        raise RuntimeError(f"xmodel {' '.join(args)} failed with exit code {rc}")
    return json.loads(buf.getvalue())


def analyses_stage(out: Path, rep: Report, results: Path, truth: Path) -> None:
    """Classification, q200 map, Table S1/S2 analogues, CCFs, facets."""
    from fits.analyses import xcca
    from xmodel.experiment import Experiment
    from xmodel.parameters import structure_from_config
    from xmodel.twin import domain_params, load_twin

    rep.stage("3. Analyses: domains, compression, indexing, disorder, XCCA, facets")
    twin_toml = CONFIG_DIR / "demo.toml"
    _cli_json(["classify", str(results), "--twin", str(twin_toml), "--figure", str(out / "domains.png"), "--json"])
    with h5py.File(results, "r") as f, h5py.File(truth, "r") as t:
        lab = f["/entry/classification/label"][()]
        tl, empty, mixed = t["/truth/label"][()], t["/truth/empty"][()], t["/truth/mixed"][()]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in t["/truth/label_names"][()]]
    inside = ~empty & ~mixed
    rep.add("### Domain maps (Fig. 1a,b)", "", "![domains](domains.png)", "",
            "| points | count | recovered |", "|---|---|---|",
            f"| in a domain (truth) | {inside.sum()} | {np.mean(lab[inside] == tl[inside]):.1%} true label |",
            f"| empty | {empty.sum()} | {np.mean(lab[empty] == -1):.1%} flagged empty |",
            f"| mixed | {mixed.sum()} | {np.mean(lab[mixed] == -2):.1%} flagged mixed |", "",
            "SAXS (0.083 1/A) and WAXS (2.12 1/A) rings are classified independently against the five "
            "domains' templates (WAXS templates over tilts up to 20 deg), with a Poisson significance "
            "test; a point whose SAXS ring is empty (boundary points tilted 8-23 deg: their SL peaks "
            "leave the Ewald sphere) takes its WAXS class (`/entry/classification/label_source`). "
            "Points with neither ring above the noise are called empty even where the truth holds a "
            "little material.", "")

    qm = _cli_json(["qmap", str(results), "--family", "200", "--figures", str(out), "--json"])
    with h5py.File(results, "r") as f, h5py.File(truth, "r") as t:
        a_map = f["/entry/qmap/200/lattice_constant"][()]
        ta = t["/truth/lattice_constant"][()]
        edge = t["/truth/boundary_distance_um"][()] <= 1.0
    err = np.abs(a_map - ta) / ta
    rows = []
    for what, sel in (("all", inside), ("interior (> 1 um from an edge)", inside & ~edge),
                      ("boundary zone (<= 1 um)", inside & edge)):
        n_sel = max(int(sel.sum()), 1)
        rows.append(f"| {what} | {int(sel.sum())} | {np.sum(err[sel] <= 0.005) / n_sel:.1%} | "
                    f"{np.sum(~np.isfinite(a_map[sel])) / n_sel:.1%} | "
                    f"{np.sum(np.isfinite(a_map[sel]) & (err[sel] > 0.005)) / n_sel:.1%} |")
    rep.add("### q200 map (Fig. 3a)", "", "![q200](qmap_200.png)", "",
            f"Median q_200 = {qm.get('median_q', float('nan')):.4f} 1/A; points per status: "
            + ", ".join(f"{k} {v}" for k, v in qm.get("status_counts", qm.get("counts", {})).items()), "",
            "Lattice constant of the joint fcc shell fit (`/entry/qmap/200/lattice_constant`) against the "
            "truth, in-domain points:", "",
            "| points | n | within 0.5 % | no value (ambiguous, no peak) | off by > 0.5 % |",
            "|---|---|---|---|---|", *rows, "")

    sample = load_twin(twin_toml)
    rep.add("### Table S1 analogue: indexing of each domain's radial profile", "",
            "Mean radial profile of the domain's points (boundaries included, so <a> sits between "
            "the bulk value and the compressed edges).", "",
            "| domain | peaks (q 1/A: hkl) | <a> (A) | bulk a (A) | median true a of the points (A) |",
            "|---|---|---|---|---|")
    with h5py.File(truth, "r") as t:
        ta = t["/truth/lattice_constant"][()]
    for k, name in enumerate(names):
        try:
            r = _cli_json(["index", str(results), "--domain", name, "--labels", str(truth), "--json"])
        except (RuntimeError, ValueError) as exc:
            rep.add(f"| {name} | {exc} | | | |")
            continue
        peaks = "; ".join(f"{p['q']:.4f}: " + ("/".join(p.get("candidates", [])) if p.get("ambiguous") else
                          "".join(str(v) for v in (p.get("hkl") or [])))
                          for p in r.get("peaks", []))
        bulk = sample.domains[k].config.superlattice.lattice_constant
        rep.add(f"| {name} | {peaks} | {r['mean_lattice_constant']:.1f} +- {r['std_lattice_constant']:.1f} | "
                f"{bulk:.1f} | {np.median(ta[(tl == k) & inside]):.1f} |")
    rep.add("")

    rep.add("### Table S2 analogue: orientational disorder from the 200_AL peak (Eq. 7)", "",
            "| domain | azimuthal FWHM (deg) | radial FWHM (deg) | dPhi (deg) | true dPhi (deg) |", "|---|---|---|---|---|")
    with h5py.File(truth, "r") as t:
        tdis = t["/truth/disorder_deg"][()]
    for k, name in enumerate(names):
        try:
            d = _cli_json(["disorder", str(results), "--domain", name, "--labels", str(truth), "--json"])
        except (RuntimeError, ValueError) as exc:
            rep.add(f"| {name} | {exc} | | | |")
            continue
        rep.add(f"| {name} | {d.get('fwhm_az_deg', float('nan')):.1f} | {d.get('fwhm_rad_deg', float('nan')):.1f} | "
                f"{d['dphi_deg']:.1f} +- {d.get('dphi_err_deg', float('nan')):.1f} | "
                f"{np.median(tdis[(tl == k) & inside]):.1f} |")
    rep.add("")

    rep.add("### XCCA (Fig. 2a-e): experiment (solid) against the forward model (dashed)", "",
            "Averaged over each domain's points away from its boundaries (boundary coordinate s < 0.5 "
            "in the truth), where the SL has its bulk orientation. Geometry maxima: those of the "
            "Gaussian-peak CCF (Eqs. 4-6) of the domain's zone axis; largest offset: from each of them "
            "to the nearest measured maximum (target: within 1 deg).", "",
            "| domain | q1, q2 (1/A) | maxima (deg) | geometry maxima (deg) | largest offset (deg) | "
            "correlation with the model | with Gaussian peaks |",
            "|---|---|---|---|---|---|---|")
    panels = []
    with h5py.File(truth, "r") as t:
        bulk_zone = t["/truth/boundary_s"][()] < 0.5
    for k, name in enumerate(names):
        frames = np.flatnonzero((tl == k) & inside & bulk_zone)
        if frames.size == 0:
            continue
        q1, q2 = CCF_Q1.get(name, 0.0838), 2.12
        dq1, dq2 = 0.002, xcca.default_dq(q2)
        (r1, r2), _ = xcca.read_rings(results, [(q1, dq1), (q2, dq2)], frames=frames)
        exp_ccf = xcca.ccf_of_rings(r1, r2)
        cfg = sample.domains[k].config
        try:
            sim = xcca.simulate_ccfs(Experiment.from_config(cfg), structure_from_config(cfg),
                                     domain_params(sample, k), r1, r2, dq1, dq2)
        except ValueError as exc:
            rep.add(f"| {name} | {q1:g}, {q2:g} | - | {exc} | |")
            continue
        score = xcca.ccf_score(exp_ccf.ccf, sim["model"].ccf)
        score_g = xcca.ccf_score(exp_ccf.ccf, sim["gaussian"].ccf)
        m_exp = xcca.ccf_maxima(exp_ccf.delta_deg, exp_ccf.ccf)
        m_geo = xcca.ccf_maxima(sim["gaussian"].delta_deg, sim["gaussian"].ccf)
        fmt = lambda v: ", ".join(f"{x:.1f}" for x in v)  # noqa: E731
        rep.add(f"| {name} | {q1:g}, {q2:g} | {fmt(m_exp)} | {fmt(m_geo)} | "
                f"{xcca.maxima_offset(m_exp, m_geo):.1f} | {score:.3f} | {score_g:.3f} |")
        panels.append({"title": f"{name}: q1 = {q1:g}, q2 = {q2:g} 1/A", "delta_deg": exp_ccf.delta_deg,
                       "ccf": exp_ccf.ccf, "ccf_simulated": sim["model"].ccf})
    if panels:
        xcca.plot_ccfs(panels, out / "ccf.png")
        rep.add("", "![ccf](ccf.png)")
    rep.add("")

    rep.add("### Facet interactions (Fig. 5, S12)", "")
    for conf in ("conf1", "conf2"):
        fac = _cli_json(["facets", "--configuration", conf, "--json"])
        rep.add(f"* {conf}: {fac.get('n_100_100', fac.get('counts', {}).get('100-100'))} {{100}}-{{100}} and "
                f"{fac.get('n_111_111', fac.get('counts', {}).get('111-111'))} {{111}}-{{111}} interactions "
                "(paper: Conf1 4 + 8, Conf2 10 + 0)")
    rep.add("")


# --------------------------------------------------------------------------- stage 4


def _subset(src: Path, dst: Path, group: str, frames: np.ndarray, n: int) -> Path:
    """Copy ``group`` of ``src`` to ``dst`` keeping only ``frames`` of per-frame datasets."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        grp_in = f[group]
        grp_out = g.require_group(group)
        for k, v in grp_in.attrs.items():
            grp_out.attrs[k] = v
        for key, ds in grp_in.items():
            if not isinstance(ds, h5py.Dataset):
                continue
            data = ds[()]
            if data.ndim >= 1 and data.shape[0] == n:
                data = data[frames]
            out = grp_out.create_dataset(key, data=data)
            for k, v in ds.attrs.items():
                out.attrs[k] = v
        if "frames_done" in grp_out.attrs:
            grp_out.attrs["frames_done"] = len(frames)
        grp_out.attrs["subset_of"] = str(src)
        g.create_dataset(f"{group}/subset_frames", data=frames)
    return dst


def fits_stage(out: Path, rep: Report, results: Path, truth: Path, n_fit: int = 0):
    """Fit frames of the demo scan (every k-th, about ``n_fit``; 0 = all) and compare with the truth.

    Returns the fit's `fits.scan.setup.FitSetup` and `fits.scan.settings.FitSettings` (the
    boundary line and the realistic frame are fitted with them).
    """
    from fits.scan.driver import fit_scan
    from fits.scan.settings import FitSettings
    from fits.scan.setup import setup_from_reduction
    from fits.scan.truth import compare_to_truth, format_pull_table, format_truth_table, pull_table
    from fits.status import FitStatus

    rep.stage("4. Fits of the patterns, against the truth")
    with h5py.File(results, "r") as f:
        n = int(f["/entry/reduction/polar"].shape[0])
    step = 1 if not n_fit or n_fit >= n else int(np.ceil(n / n_fit))
    frames = np.arange(0, n, step)
    fit_in, fit_truth = results, truth
    if step > 1:
        fit_in = _subset(results, out / "results_subset.h5", "entry/reduction", frames, n)
        fit_truth = _subset(truth, out / "truth_subset.h5", "truth", frames, n)
    cfg = load_config(default_paths("red"))       # experiment + starting values of the widths and scales
    settings = FitSettings.of(cache_dir=str(out / "cache"))
    t0 = time.perf_counter()
    setup = setup_from_reduction(fit_in, cfg, settings)     # the reduction's polar grid: the subset's is the same
    fitted = fit_scan(fit_in, cfg, out=out / "fits.h5", settings=settings, setup=setup)
    dt = time.perf_counter() - t0
    text = format_truth_table(compare_to_truth(fitted, fit_truth))
    print(text)
    which = f"All {n} frames" if step == 1 else f"Every {step}th frame ({frames.size} of {n})"
    rep.add(f"{which}: search over zone-axis templates at the candidate lattice constants, then batched "
            "Poisson maximum-likelihood refinement of orientation, tilts, lattice constant, disorder, "
            "scales and background with JAX Jacobians, the NC configuration decided by the WAXS part, "
            "then neighbour passes (doubtful frames refitted from their scan neighbours' orientations) "
            f"(`xmodel fit`); {dt:.0f} s, {dt / frames.size:.2f} s per frame on this machine. Results in "
            "`fits.h5` (`/entry/fits`). Points whose SL peaks stay below the noise (tilted far from a "
            "zone axis at the edges) get status no signal: the second table counts only the points "
            "whose SL peaks the truth says are visible.", "", text, "")
    pulls = pull_table(fitted, fit_truth, misfit_deg=5.0)
    misfits = max((int(s.get("misfits", 0)) for s in pulls.values()), default=0)
    rep.add("Error bars against the truth: pulls (fitted - true) / stored standard error over the "
            "in-domain ok frames (a calibrated error bar gives a standard deviation of 1; frames fitted "
            f"more than 5 deg from the true orientation, {misfits} here, are left out: no error bar "
            "describes a fit in another basin). The standard errors are scaled by each frame's "
            "dispersion where it exceeds 1 (`/entry/fits/dispersion`).", "", format_pull_table(pulls), "")
    if step == 1:
        _uncertainty_map(out, rep, results, fitted)
    if step == 1:
        qm = _cli_json(["qmap", str(results), "--family", "200", "--figures", str(out), "--json",
                        "--fits", str(out / "fits.h5")])
        with h5py.File(results, "r") as f, h5py.File(truth, "r") as t:
            a_map = f["/entry/qmap/200/lattice_constant"][()]
            ta = t["/truth/lattice_constant"][()]
            inside = (t["/truth/label"][()] >= 0) & ~t["/truth/empty"][()] & ~t["/truth/mixed"][()]
        err = np.abs(a_map - ta) / ta
        n5 = qm.get("status_counts", {}).get(FitStatus.FROM_MODEL_FIT.value, 0)
        rep.add("q200 map again with the model fits (`xmodel qmap --fits fits.h5`): they decide "
                f"{qm.get('decided_by_fit', 0)} points whose spots are ambiguous and give a for {n5} points "
                "whose spots show none: "
                f"in-domain lattice constant within 0.5 % of the truth on {np.mean(err[inside] <= 0.005):.1%}, "
                f"no value on {np.mean(~np.isfinite(a_map[inside])):.1%}, off by more on "
                f"{np.mean(np.isfinite(a_map[inside]) & (err[inside] > 0.005)):.1%} of {int(inside.sum())} points.", "")
        boundary_line(out, rep, results, truth, out / "fits.h5", setup, settings)
    return setup, settings


def _uncertainty_map(out: Path, rep: Report, results: Path, fits_h5: Path) -> None:
    """Maps of the fitted lattice constant and its standard error, and of the orientation's."""
    from matplotlib.figure import Figure

    from fits.scan.results import read_fits
    from xmodel.figures import save_figure
    from xmodel.maps import plot_map, scan_image
    from xmodel.reduced import open_reduced

    fits = read_fits(fits_h5)
    axes_um = open_reduced(results).axes_um()
    x_um, y_um = axes_um if axes_um is not None else (None, None)
    ok = np.asarray(fits["status"]) == 0
    panels = (("lattice_constant", "lattice constant a (A)"),
              ("lattice_constant_stderr", "standard error of a (A)"),
              ("orientation_stderr_deg", "orientation standard error (deg)"))
    fig = Figure(figsize=(15.6, 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (name, label) in zip(axes, panels):
        values = np.where(ok, np.asarray(fits[name], float), np.nan)
        img = scan_image(results, values)
        plot_map(img, img.shape, ax=ax, title=label, label=label, x_um=x_um, y_um=y_um, cmap="viridis")
    save_figure(fig, out / "uncertainty_maps.png")
    rep.add("Maps of the fitted lattice constant and of the standard errors stored with it (ok frames; "
            "white: no fit or another status):", "", "![uncertainty maps](uncertainty_maps.png)", "")


#: the demo's boundary line: from the orange domain's centre (y, x um) out through its tilted
#: edge (scan S2 of the paper: the SL rotates by 22 deg and tilts by 7 deg, Fig. 4a-f)
DEMO_LINE = ((9.6, 8.6), (9.6, 12.0))


def boundary_line(out: Path, rep: Report, results: Path, truth: Path, fits_h5: Path, setup, settings) -> None:
    """`xmodel boundary` on `DEMO_LINE` with the scan fit (its ``setup`` and ``settings``), against
    the truth's rotation."""
    from fits.scan.boundary import fit_line, line_points, read_line, scan_fit_rows, write_line
    from fits.scan.results import read_fits
    from xmodel import orientation

    with h5py.File(results, "r") as f:
        pos = f["/entry/reduction/positions"][()]
    index, dist = line_points(pos, *DEMO_LINE)
    scan = read_fits(fits_h5)
    res = fit_line(read_line(results, index), setup, settings, scan_fit=scan_fit_rows(fits_h5, index, len(pos)),
                   scan_bulk={k: scan[k] for k in ("orientation_matrix", "status", "orientation_stderr_deg")
                              if k in scan})
    write_line(res, dist, index, pos, out / "boundary")
    with h5py.File(truth, "r") as t:
        R_t = t["/truth/orientation_matrix"][()]
        lab = t["/truth/label"][()]
        s_t = t["/truth/boundary_s"][()]
        vis = t["/truth/sl_visible"][()] if "/truth/sl_visible" in t else np.ones(lab.size, bool)
    k = lab[index[0]]
    bulk_t = R_t[np.flatnonzero((lab == k) & (s_t == 0))[0]]
    rows = [("| distance (um) | frame | true rotation (deg) | fitted (deg, +- standard error) | true a (A) | "
             "fitted a (A) | status |"),
            "|---|---|---|---|---|---|---|"]
    with h5py.File(truth, "r") as t:
        a_t = t["/truth/lattice_constant"][()]
    from fits.status import FitStatus
    hits = []
    for j, i in enumerate(index):
        rt = (float(np.degrees(orientation.misorientation_angle(bulk_t, R_t[i]))) if np.all(np.isfinite(R_t[i]))
              else float("nan"))
        rf = float(res["rotation_deg"][j])
        if vis[i] and np.isfinite(rt):
            hits.append(np.isfinite(rf) and abs(rf - rt) <= 1.0)
        se = float(res["rotation_deg_stderr"][j])
        fitted = f"{rf:.1f}" + (f" +- {se:.2f}" if np.isfinite(se) else "")
        rows.append(f"| {dist[j]:.1f} | {i} | {rt:.1f} | {fitted} | {a_t[i]:.1f} | {res['lattice_constant'][j]:.1f} | "
                    f"{FitStatus.from_code(res['status'][j]).value} |")
    rep.add("### Boundary line (Fig. 3b,c, 4a-f): out of the orange domain through its tilted edge", "",
            f"`xmodel boundary results.h5 --fits fits.h5 --from {DEMO_LINE[0][1]},{DEMO_LINE[0][0]} --to "
            f"{DEMO_LINE[1][1]},{DEMO_LINE[1][0]}`: each point refined from the previous one, from the scan "
            "fit and by a fresh search (the lowest deviance wins); rotation = misorientation to the "
            "domain's bulk orientation over the whole map. Rotation within 1 deg of the truth at "
            f"{sum(hits)} of {len(hits)} points with SL peaks.", "", *rows, "", "![boundary](boundary.png)", "")


# --------------------------------------------------------------------------- stage 5

#: the realistic twin of the demo: configs/demo.toml's layout (7 x 7 points at 2 um) rendered by
#: the independent real-space simulator (docs/realspace.md)
REALISTIC_TWIN = CONFIG_DIR / "twin_realistic_demo.toml"


def reduce_like(counts: np.ndarray, geometry, bins, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reduce one detector frame onto a scan's polar grid, as ``xmodel reduce`` does (no pixel
    splitting, `xmodel.reduction.build_bin_map` and `reduce_frames`).

    Parameters
    ----------
    counts : (rows, cols) counts of the frame.
    geometry : `xmodel.geometry.Geometry` of the frame's detector.
    bins : `xmodel.reduction.PolarBins` of the scan's reduction (``/entry/reduction/q_edges``,
        ``chi_edges``).
    mask : (rows, cols) the reduction's mask (True = masked).

    Returns
    -------
    polar : (n_chi, n_q) float32 mean counts per pixel of each bin (NaN: no valid pixel).
    pixel_counts : (n_chi, n_q) pixels per bin.
    """
    from xmodel.reduction import build_bin_map, reduce_frames

    if tuple(np.shape(counts)) != tuple(np.shape(mask)):
        raise ValueError(f"the frame has {np.shape(counts)} pixels, the reduction's mask {np.shape(mask)}: "
                         "render the frame on the scan's detector.")
    bin_map = build_bin_map(geometry.q(), geometry.chi(), mask, bins)
    polar, _ = reduce_frames(counts, bin_map)
    return polar[0], bin_map.counts


def fitted_polar(row: dict, setup, settings) -> np.ndarray:
    """(n_chi, n_q) the fitted model of frame 0 of ``row`` (`fits.scan.frames.fit_frames` output)
    on the polar grid of ``setup``: counts per pixel on the fit points, NaN elsewhere and where
    the frame has no fit."""
    from fits.scan.starts import params_from_row

    image = np.full(setup.chi_deg.size * setup.q.size, np.nan)
    if not np.isfinite(row["lattice_constant"][0]):
        return image.reshape(setup.chi_deg.size, setup.q.size)
    scales = {k: float(np.nan_to_num(row[k][0])) for k in ("sl_scale", "diffuse_scale", "al_scale", "background")}
    params = params_from_row(row, 0, setup, settings).replace(**scales)    # the fitted scales, unfloored
    image[setup.index] = np.asarray(setup.model(params), float)
    return image.reshape(setup.chi_deg.size, setup.q.size)


@dataclass(frozen=True, eq=False)
class RealisticFit:
    """One realistic frame, reduced and fitted (`realistic_frame_stage`), for `report_realistic_frame`.

    Attributes
    ----------
    point : scan point of the realistic twin; twin : its TOML's file name.
    truth : the point's truth row (`xmodel.realspace.single.RealisticFrame.truth`).
    row : `fits.scan.frames.fit_frames` output for the one frame (arrays of length 1).
    q, chi_deg : (n_q,), (n_chi,) the polar grid (1/A, deg).
    polar, model, residual : (n_chi, n_q) observed mean counts per pixel, fitted model (NaN where
        not evaluated), deviance residual (NaN where not fitted).
    windows : (label, q_min, q_max) of the figure's rows (1/A).
    seconds : wall-clock time from rendering to the fit's residuals (s).
    """

    point: int
    twin: str
    truth: dict
    row: dict
    q: np.ndarray
    chi_deg: np.ndarray
    polar: np.ndarray
    model: np.ndarray
    residual: np.ndarray
    windows: list
    seconds: float


def realistic_frame_stage(out: Path, rep: Report, results: Path, setup, settings, config: Path = REALISTIC_TWIN,
                          overrides=(), bins=None, mask: np.ndarray | None = None) -> dict:
    """One realistic frame beside its Gaussian-model fit: render, reduce, fit, figure, table row.

    The frame is scan point `xmodel.realspace.single.bulk_point` of the realistic twin
    ``config`` (the in-domain, unmixed point farthest from an empty area: chosen by a rule, not
    by its fit), rendered by `xmodel.realspace.single.render_point` (the counts
    ``xmodel synth CONFIG --engine realspace`` writes for that frame), reduced onto the scan's
    polar grid (`reduce_like`) and fitted by the scan fit's per-frame code
    (`fits.scan.frames.fit_frames`) with the scan's ``setup`` and ``settings``.

    Parameters
    ----------
    results : the scan's reduction (``/entry/reduction``: its bin edges and mask are used).
    setup, settings : the scan fit's `fits.scan.setup.FitSetup` and `fits.scan.settings.FitSettings`.
    config : the realistic-twin TOML; overrides : ``--set`` strings for its twin.
    bins, mask : `xmodel.reduction.PolarBins` and (rows, cols) mask to reduce with instead of
        those of ``results`` (both, or neither; ``results`` is then not read).

    Returns
    -------
    dict
        `report_realistic_frame`'s summary.
    """
    import jax.numpy as jnp

    from fits.objective import deviance_residuals
    from fits.scan.frames import fit_frames
    from xmodel.realspace.single import render_point
    from xmodel.reduced import open_reduced
    from xmodel.reduction import PolarBins

    rep.stage("5. One realistic frame: the Gaussian model against an independent simulator")
    t0 = time.perf_counter()
    frame = render_point(config, overrides=overrides)
    if bins is None or mask is None:
        scan = open_reduced(results)
        if scan.q_edges is None or scan.chi_edges is None or scan.mask is None:
            raise ValueError(f"{results}: /entry/reduction holds no bin edges or mask (q_edges, chi_edges, "
                             "mask); reduce the scan again with this version of xmodel reduce.")
        bins, mask = PolarBins(scan.q_edges, scan.chi_edges), scan.mask
    polar, pixel_counts = reduce_like(frame.counts, frame.experiment.geometry, bins, mask)
    row = fit_frames(polar[None], setup, settings)
    model = fitted_polar(row, setup, settings)
    fitted = np.isfinite(model)
    obs = np.where(fitted, polar, np.nan)
    res = np.asarray(deviance_residuals(jnp.asarray(np.nan_to_num(model, nan=1.0)), jnp.asarray(obs),
                                        jnp.asarray(np.where(fitted, pixel_counts, 0.0))), float)
    res = np.where(fitted & np.isfinite(obs), res, np.nan)
    q_fit = setup.q[setup.index % setup.q.size]
    windows = [(name, float(q_fit[sel].min()), float(q_fit[sel].max()))
               for name, sel in (("SAXS", q_fit < 0.5), ("WAXS", q_fit >= 0.5)) if sel.any()]
    fit = RealisticFit(point=frame.point, twin=Path(config).name, truth=frame.truth, row=row, q=setup.q,
                       chi_deg=setup.chi_deg, polar=polar, model=model, residual=res, windows=windows,
                       seconds=time.perf_counter() - t0)
    return report_realistic_frame(out, rep, fit)


def report_realistic_frame(out: Path, rep: Report, fit: RealisticFit) -> dict:
    """Figure ``realistic_frame.png`` (observed | model | residual per q window, `plot_polar_fit`)
    and the report's paragraph and table row: orientation error (misorientation of the fitted
    SL orientation to the truth under cubic symmetry, deg; against the domain's orientation and,
    where the truth row has ``grain_orientation_matrix``, against the mean orientation of the
    grains in the beam), lattice constant (A, error in %; where the truth row has
    ``grain_lattice_constant``, also against the grains' lattice constant normal to the beam),
    configuration and status.

    Returns
    -------
    dict
        ``point``, ``label``, ``orientation_error_deg``, ``grains_error_deg`` (NaN without the
        grains' orientation), ``a_fit``, ``a_true`` (A),
        ``a_error_pct``, ``a_grains_error_pct`` (NaN without the grains' lattice constant), ``configuration`` (fitted), ``configuration_true``, ``status``,
        ``seconds`` (rendering to figure) and ``figure`` (path).
    """
    from fits.status import FitStatus
    from xmodel import orientation
    from xmodel.figures import plot_polar_fit

    t0 = time.perf_counter()
    t, row = fit.truth, fit.row
    label = str(t["label_name"])
    status = FitStatus.from_code(int(row["status"][0])).name.lower().replace("_", " ")
    R_fit = np.asarray(row["orientation_matrix"][0], float)

    def error_to(R_true) -> float:
        if R_true is None or not (np.all(np.isfinite(R_fit)) and np.all(np.isfinite(R_true))):
            return float("nan")
        return float(np.degrees(orientation.misorientation_angle(R_fit, np.asarray(R_true, float))))

    err_deg = error_to(t["orientation_matrix"])
    grains_deg = error_to(t.get("grain_orientation_matrix"))
    a_fit, a_true = float(row["lattice_constant"][0]), float(t["lattice_constant"])
    a_err = 100.0 * (a_fit - a_true) / a_true
    a_grains = float(t.get("grain_lattice_constant", np.nan))
    a_grains_err = 100.0 * (a_fit - a_grains) / a_grains
    conf = str(row["configuration"][0]) or "undetermined"
    conf_true = t["configuration"].decode() if isinstance(t["configuration"], bytes) else str(t["configuration"])
    png = "realistic_frame.png"
    if np.isfinite(a_fit):
        title = (f"realistic frame ({label}, point {fit.point}): orientation error {err_deg:.2f} deg, "
                 f"a {a_fit:.1f} A fitted vs {a_true:.1f} A true ({a_err:+.2f} %), {conf} fitted vs {conf_true} "
                 f"true, status {status}")
    else:
        title = f"realistic frame ({label}, point {fit.point}): no fit (status {status}), true a {a_true:.1f} A"
    plot_polar_fit(fit.q, fit.chi_deg, fit.polar, fit.model, fit.residual, fit.windows, out / png, title=title)
    dt = fit.seconds + time.perf_counter() - t0
    print(f"   realistic frame (point {fit.point}): rendered, reduced, fitted and drawn in {dt:.1f} s; "
          f"orientation error {err_deg:.2f} deg, a error {a_err:+.2f} %, status {status}", flush=True)
    rep.add(f"Frame {fit.point} of the realistic demo twin (`configs/{fit.twin}`: the layout of "
            "`configs/demo.toml` on a 7 x 7 grid at 2 um), the counts that "
            f"`xmodel synth configs/{fit.twin} --engine realspace` writes for that frame. This frame was made by "
            "a simulator that shares no code with the model but the detector geometry and the orientation "
            "conventions (explicit NC positions in paracrystalline grains, finite PbS crystals, membrane, "
            "air, beamstop shadow, streak, flux drift and bad pixels: docs/realspace.md); docs/validation.md "
            "has the figures for a whole realistic scan, where the model's fits are biased.", "",
            "The frame holds several coherent grains, each rotated by a few tenths of a degree about the "
            "domain's orientation; the table gives the orientation error against the domain's orientation "
            "and against the grains' mean (NC-weighted), the most a single-orientation fit can recover; the "
            "lattice constant against the domain's and against the grains' (each a finite paracrystal, strained "
            "at random by a few tenths of a percent), in the plane normal to the beam.", "",
            "The point is chosen by a fixed rule, not by its fit: the in-domain, unmixed point farthest "
            f"from an empty area ({float(t['boundary_distance_um']):.1f} um, domain {label}). It "
            "is reduced onto the scan's polar grid as `xmodel reduce` reduced the scan, and fitted by the "
            "scan fit's per-frame code (`fits.scan.frames.fit_frames`, what `xmodel fit` runs) with the "
            f"scan's settings; {dt:.1f} s from rendering to figure. Residual: signed Poisson deviance "
            "residual of each fitted bin (grey: not fitted).", "",
            "| frame | orientation error (deg) | vs the grains' mean (deg) | a fitted / true (A) | a error (%) "
            "| vs the grains' a (%) | configuration fitted / true | status |", "|---|---|---|---|---|---|---|---|",
            f"| realistic frame ({label}, point {fit.point}) | {err_deg:.2f} | {grains_deg:.2f} | {a_fit:.1f} / "
            f"{a_true:.1f} | {a_err:+.2f} | {a_grains_err:+.2f} | {conf} / {conf_true} | {status} |", "",
            f"Status message: {row['message'][0]}", "", f"![realistic frame]({png})", "")
    return {"point": fit.point, "label": label, "orientation_error_deg": err_deg, "grains_error_deg": grains_deg,
            "a_fit": a_fit,
            "a_true": a_true, "a_error_pct": a_err, "a_grains_error_pct": a_grains_err, "configuration": conf, "configuration_true": conf_true,
            "status": status, "seconds": dt, "figure": out / png}
