"""``xmodel ccf``: X-ray cross-correlation function of two rings (Eqs. 1-6, Fig. 2a-e)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from xmodel.commands._common import add_command, add_json_arg

#: chi bin edges (deg) of a single pattern's rings: 1 deg bins over the full circle
CHI_RANGE_DEG, N_CHI = (-180.0, 180.0), 360


def _domain_frames(path: Path, domain: str) -> np.ndarray:
    """Frame indices of ``--domain``: a list "0,5,7" or a class name / index of the classification."""
    import h5py
    import numpy as np

    from fits.analyses.classification_file import LABEL
    from fits.analyses.disorder import class_names, domain_frames

    text = domain.strip()
    if all(p.strip().lstrip("-").isdigit() for p in text.split(",")) and "," in text:
        return np.array([int(p) for p in text.split(",")])
    with h5py.File(path, "r") as f:
        if LABEL not in f:
            raise ValueError(f"--domain {domain!r} needs {LABEL} in {path}; run "
                             "`xmodel classify` first or pass frame indices, e.g. --domain 0,1,2.")
        n = int(f["entry/reduction/polar"].shape[0])
        names = class_names(f, LABEL)
    if not text.lstrip("-").isdigit() and text.lower() not in [m.lower() for m in names]:
        raise ValueError(f"--domain {domain!r} is not a class of {path}; valid: {names} (or an index, "
                         "or a comma-separated list of frame indices).")
    return domain_frames(path, text, n, dataset=LABEL)


def _pattern_rings(path: Path, rings):
    """Rings of a single pattern of `xmodel simulate`, binned without pixel splitting."""
    import h5py
    import numpy as np

    from fits.analyses.xcca import Ring
    from xmodel.geometry import Geometry
    from xmodel.reduction import PolarBins, build_bin_map, reduce_frames

    with h5py.File(path, "r") as f:
        image = f["entry/pattern/intensity"][()]
        mask = f["entry/pattern/mask"][()].astype(bool) if "entry/pattern/mask" in f else np.zeros(image.shape, bool)
        g = dict(f["entry/geometry"].attrs)
    geom = Geometry(**{k: float(g[k]) for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3",
                                                 "wavelength", "pixel1", "pixel2")},
                    shape=tuple(int(v) for v in g["shape"]), detector_name=str(g.get("detector", "")))
    q, chi = geom.q(), geom.chi()
    out = []
    for q0, dq in rings:
        bins = PolarBins(np.array([q0 - dq, q0 + dq]), np.linspace(*CHI_RANGE_DEG, N_CHI + 1))
        polar, _ = reduce_frames(image, build_bin_map(q, chi, mask, bins))
        prof = polar[0, :, 0].astype(np.float64)
        w = np.isfinite(prof).astype(float)
        out.append(Ring(np.where(w > 0, prof, 0.0), w, bins.chi_centres, float(q0), float(dq)))
    return out, 1


def run(args) -> int:
    import h5py

    from fits.analyses import xcca
    from xmodel.outputs import prepare_file

    path = Path(args.input)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist; pass a reduced scan or a pattern of "
                                "`xmodel simulate`.")
    if args.figure:
        prepare_file(args.figure, "--figure", example="ccf.png")
    dq = args.dq or [None]
    if len(dq) > 2:
        raise ValueError(f"--dq takes one or two values (1/A), got {dq}.")
    dq1 = dq[0] if dq[0] is not None else xcca.default_dq(args.q1)
    dq2 = dq[-1] if dq[-1] is not None else xcca.default_dq(args.q2)
    dq1, dq2 = xcca.check_dq(dq1, args.q1), xcca.check_dq(dq2, args.q2)
    with h5py.File(path, "r") as f:
        kind = "scan" if "entry/reduction/polar" in f else "pattern" if "entry/pattern/intensity" in f else None
    if kind is None:
        raise ValueError(f"{path} holds neither /entry/reduction/polar (xmodel reduce) nor "
                         "/entry/pattern/intensity (xmodel simulate).")
    if kind == "scan":
        frames = _domain_frames(path, args.domain) if args.domain else None
        (r1, r2), _ = xcca.read_rings(path, [(args.q1, dq1), (args.q2, dq2)], frames=frames)
    else:
        if args.domain:
            raise ValueError("--domain applies to reduced scans only; a single pattern is one frame.")
        (r1, r2), _ = _pattern_rings(path, [(args.q1, dq1), (args.q2, dq2)])
    res = xcca.ccf_of_rings(r1, r2)
    out = {"input": str(path), "q1": args.q1, "q2": args.q2, "dq1": dq1, "dq2": dq2,
           "n_frames": res.n_frames, "delta_deg": res.delta_deg.tolist(), "ccf": res.ccf.tolist(),
           "maxima_deg": xcca.ccf_maxima(res.delta_deg, res.ccf).tolist()}
    sim = None
    configs = list(args.configs) + list(args.simulate_configs or [])
    if args.overrides and not configs:
        raise ValueError("--set overrides a value of the CONFIG files; give the configs to compare with, "
                         "e.g. configs/experiment/p10_eiger4m.toml configs/domains/yellow.toml")
    if configs:
        sim = _simulate(configs, args.overrides, r1, r2, dq1, dq2)
        out["ccf_simulated"] = sim["model"].ccf.tolist()
        out["ccf_gaussian"] = sim["gaussian"].ccf.tolist()
        out["score"] = xcca.ccf_score(res.ccf, sim["model"].ccf)
        out["score_gaussian"] = xcca.ccf_score(res.ccf, sim["gaussian"].ccf)
    if args.out:
        from fits.analyses.ccf_file import write_ccf

        parameters = {k: out[k] for k in ("q1", "q2", "dq1", "dq2", "n_frames", "score", "score_gaussian")
                      if k in out}
        parameters.update(input=str(path.resolve()), domain=args.domain, overrides=list(args.overrides))
        write_ccf(args.out, res.delta_deg, res.ccf, out["maxima_deg"], parameters=parameters, configs=configs,
                  simulated=None if sim is None else {"ccf_simulated": sim["model"].ccf,
                                                      "ccf_gaussian": sim["gaussian"].ccf})
        out["out"] = str(args.out)
    if args.figure:
        from xmodel.figures import plot_ccf, save_figure

        what = "reduced scan" if kind == "scan" else "pattern"
        fig = plot_ccf(res.delta_deg, res.ccf, ccf_model=None if sim is None else sim["model"].ccf,
                       data_label=f"{what} {path.name}",
                       model_label="forward model of " + ", ".join(Path(c).stem for c in configs),
                       title=f"q1 = {args.q1:g}, q2 = {args.q2:g} 1/Å")
        save_figure(fig, args.figure)
        out["figure"] = str(args.figure)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"CCF of q1 = {args.q1:g} +- {dq1:g} and q2 = {args.q2:g} +- {dq2:g} 1/A over "
              f"{res.n_frames} frame(s); maxima at Delta = "
              + ", ".join(f"{v:.1f}" for v in out["maxima_deg"]) + " deg")
        if sim is not None:
            print(f"correlation with the forward-model CCF {out['score']:.3f}, "
                  f"with the Gaussian-peak CCF {out['score_gaussian']:.3f}")
    return 0


def _simulate(configs, overrides, r1, r2, dq1, dq2) -> dict:
    """Forward-model and Gaussian-peak (Eqs. 4-6) CCFs of a config on the data's chi grid."""
    from fits.analyses import xcca
    from xmodel.config import load_config
    from xmodel.experiment import Experiment
    from xmodel.parameters import params_from_config, structure_from_config

    cfg = load_config(configs, overrides)
    try:
        return xcca.simulate_ccfs(Experiment.from_config(cfg, binning=1), structure_from_config(cfg),
                                  params_from_config(cfg), r1, r2, dq1, dq2)
    except ValueError as exc:
        raise ValueError(f"{list(map(str, configs))}: {exc}") from None


def add_parser(sub) -> None:
    p = add_command(sub, "ccf", "cross-correlation function of two rings (XCCA, Eqs. 1-6)")
    p.add_argument("input", metavar="INPUT", help="reduced scan (xmodel reduce) or pattern (xmodel simulate)")
    p.add_argument("configs", nargs="*", metavar="CONFIG",
                   help="TOML files (experiment, domain), right after INPUT, whose forward-model CCF is "
                        "compared with INPUT's")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override one value of the CONFIG files, parsed as TOML; repeatable")
    p.add_argument("--simulate", dest="simulate_configs", nargs="+", default=None,
                   help=argparse.SUPPRESS)      # the earlier spelling of the CONFIG... arguments
    p.add_argument("--q1", type=float, required=True, help="first ring, 1/A (e.g. 0.083 for 200_SL)")
    p.add_argument("--q2", type=float, required=True, help="second ring, 1/A (e.g. 2.12 for 200_AL)")
    p.add_argument("--dq", type=float, nargs="+", default=None, metavar="DQ",
                   help="band half-width(s) in 1/A: one for both rings or DQ1 DQ2 "
                        "(default: max(0.002, 0.02 q))")
    p.add_argument("--domain", default=None,
                   help="class name or index of /entry/classification/label, or frame indices 0,1,2")
    p.add_argument("--figure", default=None, metavar="FILE", help="write a figure like Fig. 2a-e")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the CCF (and the model CCFs) to a NeXus HDF5 file")
    add_json_arg(p, "delta_deg, ccf (and the model CCFs)")
    p.set_defaults(func=run)
