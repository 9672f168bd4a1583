"""``xmodel classify``: SAXS/WAXS domain classes of every scan point (Fig. 1a,b)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from xmodel.commands._common import add_command, add_json_arg

Q_SL, DQ_SL = 0.083, 0.005      # 200_SL ring; wide enough for the 5-13 % compression at edges
Q_AL, DQ_AL = 2.12, 0.042       # 200_AL ring
TILT_MAX_DEG, TILT_STEP_DEG = 20.0, 5.0     # WAXS template families over out-of-plane tilts


def _variance_factor(path: Path, q0: float, dq: float):
    """`fits.analyses.classify.poisson_variance_factor` of a ring, None without ``/entry/reduction/counts``."""
    import h5py

    from fits.analyses.classify import poisson_variance_factor

    with h5py.File(path, "r") as f:
        grp = f["entry/reduction"]
        if "counts" not in grp:
            return None
        return poisson_variance_factor(grp["counts"][()], grp["q"][()], q0, dq)


def _experiment(path: Path, cfg):
    """Geometry and mask of the reduction (its PONI text and mask), else the config's."""
    import h5py

    from xmodel.experiment import Experiment
    from xmodel.geometry import Geometry

    with h5py.File(path, "r") as f:
        grp = f["entry/reduction"]
        poni = grp.attrs.get("poni")
        mask = grp["mask"][()].astype(bool) if "mask" in grp else None
    base = Experiment.from_config(cfg, binning=1)
    if not poni or mask is None:
        return base
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "scan.poni"
        p.write_text(poni if isinstance(poni, str) else poni.decode())
        geom = Geometry.from_poni(p, detector=base.geometry.detector_name or None)
    return Experiment(geometry=geom, mask=mask, polarization_factor=base.polarization_factor)


def _given_templates(args, path, chi, q_grid):
    """Names, SL orientations and (SAXS, WAXS) templates of the five domains (or a twin's)."""
    import numpy as np

    from fits.analyses.classify import templates_from_model, tilted_params
    from xmodel.config import DOMAINS, default_paths, load_config
    from xmodel.parameters import params_from_config, structure_from_config

    if args.twin:
        from xmodel.twin import domain_params, load_twin

        sample = load_twin(args.twin)
        names = list(sample.label_names)
        cfgs = list(sample.configs)
        params = [domain_params(sample, k) for k in range(len(names))]
    else:
        names = list(DOMAINS)
        cfgs = [load_config(default_paths(d)) for d in names]
        params = [params_from_config(c) for c in cfgs]
    params = [p.replace(background=0.0) for p in params]
    exp = _experiment(path, cfgs[0])
    a = [c.superlattice.lattice_constant for c in cfgs]
    structure = structure_from_config(cfgs[0], lattice_constant_range=(min(a), max(a)))
    t_sl = templates_from_model(params, exp, structure, q_grid, chi, Q_SL, DQ_SL)
    # WAXS: each domain at out-of-plane tilts up to 20 deg (boundaries tilt 8-23 deg; the broad
    # 200_AL peaks move along the ring with the tilt), so that tilted points keep their class
    tilted, fam_class = tilted_params(params, max_tilt_deg=TILT_MAX_DEG, step_deg=TILT_STEP_DEG)
    t_al = templates_from_model(tilted, exp, structure, q_grid, chi, Q_AL, DQ_AL)
    rot = np.array([np.asarray(p.astype(np.float64).sl_orientation()) for p in params])
    return names, rot, t_sl, t_al, fam_class


def _untilted(fam_class: np.ndarray) -> np.ndarray:
    """Index of the untilted member of each class family (the centre of its tilt grid)."""
    import numpy as np

    return np.array([np.flatnonzero(fam_class == c)[np.sum(fam_class == c) // 2]
                     for c in range(int(fam_class.max()) + 1)])


def run(args) -> int:
    import h5py
    import numpy as np

    from fits.analyses import classify
    from fits.analyses.classification_file import GROUP, write_classification
    from fits.analyses.xcca import read_rings
    from fits.status import FitStatus, read_status
    from xmodel.figures import save_figure
    from xmodel.maps import plot_label_maps, scan_axes
    from xmodel.outputs import prepare_file
    from xmodel.reduced import open_reduced

    path = Path(args.results)
    if not path.exists():
        raise FileNotFoundError(f"results file {path} does not exist; run `xmodel reduce` first.")
    prepare_file(path, "RESULTS (written in place: /entry/classification)", hdf5=True)
    figure = Path(args.figure) if args.figure else path.with_name(path.stem + "_domains.png")
    prepare_file(figure, "--figure", example="domains.png")
    (r_sl, r_al), n = read_rings(path, [(Q_SL, DQ_SL), (Q_AL, DQ_AL)])
    with h5py.File(path, "r") as f:
        grp = f["entry/reduction"]
        q_all, chi = grp["q"][()], grp["chi"][()]
        shape = tuple(int(v) for v in grp["scan_shape"][()]) if "scan_shape" in grp else (1, n)
        if int(np.prod(shape)) != n:        # a subset of a scan's frames: draw them as one row
            shape = (1, n)
        positions = grp["positions"][()] if "positions" in grp else None
        fits_r = f["entry/fits/orientation_matrix"][()] if "entry/fits/orientation_matrix" in f else None
        status = read_status(f["entry/fits/status"]) if "entry/fits/status" in f else None
    opts = dict(min_significance=args.min_significance, mixed_fraction=args.mixed_fraction)
    rot = None
    if args.templates == "five":
        band = (np.abs(q_all - Q_SL) <= DQ_SL) | (np.abs(q_all - Q_AL) <= DQ_AL)
        names, rot, t_sl, t_al, fam_class = _given_templates(args, path, chi, q_all[band])
        saxs = classify.fit_templates(r_sl.intensity, r_sl.weight, t_sl, **opts)
        # frames without peaks in the fixed band: read the ring at their own 200_SL position,
        # so that compressed boundary points (q_200 up to 0.095 1/A) are still classified
        retry = np.flatnonzero(saxs.label == classify.EMPTY)
        if retry.size:
            r_scaled, _ = classify.scaled_ring(path, Q_SL)
            again = classify.fit_templates(r_scaled.intensity[retry], r_scaled.weight[retry], t_sl, **opts)
            saxs = classify.merge_classes(saxs, again, retry)
        waxs = classify.fit_template_families(
            r_al.intensity, r_al.weight, t_al, fam_class, variance_factor=_variance_factor(path, Q_AL, DQ_AL),
            alike=classify.template_similarity(t_al[_untilted(fam_class)] * r_al.weight[:1]), **opts)
        label, conf, source = classify.combine_rings(
            saxs, waxs, classify.template_similarity(t_sl),
            classify.template_similarity(t_al[_untilted(fam_class)] * r_al.weight[:1]))
    else:
        t_sl = classify.cluster_templates(r_sl.intensity, r_sl.weight, n_classes=args.n_classes)
        saxs = classify.fit_templates(r_sl.intensity, r_sl.weight, t_sl, **opts)
        try:
            t_al = classify.cluster_templates(r_al.intensity, r_al.weight, n_classes=args.n_classes)
            waxs = classify.fit_templates(r_al.intensity, r_al.weight, t_al, **opts)
        except ValueError:          # no WAXS peaks anywhere: WAXS empty everywhere
            waxs = classify.RingClasses(np.full(n, classify.EMPTY), np.ones(n), np.zeros((n, 0)), np.zeros((n, 0)))
        names = [f"class{k}" for k in range(t_sl.shape[0])]
        mapping = classify.match_classes(waxs.label, saxs.label)
        label, conf = classify.combine_labels(saxs, waxs, mapping)
        source = None
    orient = None
    if fits_r is not None and status is not None:
        ok = status == FitStatus.OK.code
        orient = classify.classify_orientations(fits_r, ok, rot if args.templates == "five" else None,
                                                n_classes=args.n_classes)[0]
    axes_um = scan_axes(positions, shape)
    labels = {"label": label, "saxs_label": saxs.label, "waxs_label": waxs.label}
    if orient is not None:
        labels["orientation_label"] = orient
    if source is not None:
        labels["label_source"] = source
    write_classification(
        path, open_reduced(path), names, classify.class_colors(names), labels,
        {"confidence": conf, "saxs_confidence": saxs.confidence, "waxs_confidence": waxs.confidence},
        parameters={"templates": args.templates, "n_classes": args.n_classes, "twin": args.twin,
                    "min_significance": args.min_significance, "mixed_fraction": args.mixed_fraction},
        method=(f"ring peaks, templates={args.templates}, n_classes={args.n_classes}, "
                f"rings q_SL={Q_SL}+-{DQ_SL}, q_AL={Q_AL}+-{DQ_AL} 1/A, "
                f"min_significance={args.min_significance}, mixed_fraction={args.mixed_fraction}"))
    maps = {"SAXS (q = 0.083 1/A)": saxs.label, "WAXS (q = 2.12 1/A)": waxs.label, "label": label}
    if orient is not None:
        maps["fitted orientations"] = orient
    x_um, y_um = axes_um if axes_um is not None else (None, None)
    save_figure(plot_label_maps(maps, names, classify.class_colors(names), shape, x_um=x_um, y_um=y_um), figure)
    counts = {nm: int(np.sum(label == k)) for k, nm in enumerate(names)}
    counts.update(mixed=int(np.sum(label == classify.MIXED)), empty=int(np.sum(label == classify.EMPTY)),
                  no_data=int(np.sum(label == classify.NO_DATA)))
    if args.json:
        print(json.dumps({"results": str(path), "figure": str(figure), "class_names": names, "counts": counts}))
    else:
        print(f"{path}:{GROUP}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        print(f"figure: {figure}")
    return 0


def add_parser(sub) -> None:
    p = add_command(sub, "classify", "SAXS/WAXS domain classes of every scan point (Fig. 1a,b)")
    p.add_argument("results", metavar="RESULTS", help="reduced scan (xmodel reduce), optionally with fits")
    p.add_argument("--templates", default="five", choices=["five", "cluster"],
                   help="'five': the paper's five domains (configs/domains, or --twin); 'cluster': "
                        "classes found by clustering the ring profiles")
    p.add_argument("--twin", default=None, metavar="CONFIG",
                   help="twin TOML whose domains (in-plane angles) give the templates")
    p.add_argument("--n-classes", type=int, default=None, help="number of classes for clustering")
    p.add_argument("--min-significance", type=float, default=6.0,
                   help="a class counts when its amplitude is this many noise sigmas")
    p.add_argument("--mixed-fraction", type=float, default=0.1,
                   help="second class share that makes a point mixed")
    p.add_argument("--figure", default=None, metavar="FILE", help="map figure (default: RESULTS_domains.png)")
    add_json_arg(p, "the class names, counts and files")
    p.set_defaults(func=run)
