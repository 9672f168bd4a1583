"""Orientation errors of single realistic frames fitted one at a time, and the deviance along the tilt.

Usage: python benchmarks/frame_tilts.py RESULTS.h5 CONFIG.toml [CONFIG.toml ...] --twin TWIN.toml
           [--twin TWIN.toml ...] --points 186,206 [--set TABLE.KEY=VALUE ...] [--profile] [--pull]

Each scan point of each realistic-twin TOML (``--twin``: e.g. configs/twin_realistic.toml, or a
copy with one grain, no mosaic, no displacement or no nuisances, docs/realspace.md) is rendered
(`xmodel.realspace.single.render_point`), reduced onto the polar grid of ``RESULTS.h5`` (its bin
edges and mask, `xmodel.demo.reduce_like`) and fitted by the scan fit's per-frame code
(`fits.scan.frames.fit_frames`) with the experiment ``CONFIG`` files and ``--set`` overrides
(``fit.vary``, ``model.sl_peak_tail``, ...). It prints the errors of tilt1, tilt2 and the in-plane
angle (`fits.scan.truth.orientation_errors`) against the domain's orientation and against the mean
of the grains in the beam, and the lattice constant. ``--profile`` then refines the frame at fixed
orientations along the rotation that takes the truth to the fit (-1.5 to 1.5 times it; the lattice
constant and the scales refined, `fits.scan.starts.refine_starts`) and prints the deviance at each:
a minimum away from 0 is what the model prefers, not where a search stopped. ``--pull`` says which
data pull the fit there: at the truth (refined with the orientation held, as ``--profile``) it
takes the Poisson deviance of every fit point (`fits.objective.pointwise_deviance`) rotated by
+-`PULL_STEP_DEG` about that rotation's axis, and prints the change summed over q bands
(`pull_by_band`; negative: the band prefers the fitted orientation) and the points that pull most.
The single-frame experiments of docs/validation.md ("Where the tilt offsets come from") were made
with it.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.spatial.transform import Rotation

#: the refined parameters of ``--profile``: the orientation held
HELD_ORIENTATION = '["lattice_constant","sl_scale","diffuse_scale","al_scale","background","disorder_deg"]'
#: half the rotation (deg) over which ``--pull`` differences each point's deviance
PULL_STEP_DEG = 0.25
#: q bands of ``--pull`` (1/A): 0.005 wide below 0.3 (the SAXS shells), 0.05 above (the AL rings)
PULL_EDGES = np.concatenate([np.arange(0.0, 0.3, 0.005), np.arange(0.3, 5.0, 0.05)])


def pull_by_band(q: np.ndarray, change: np.ndarray, edges: np.ndarray = PULL_EDGES) -> list[tuple[float, float, float]]:
    """``(q_low, q_high, summed change)`` of the q bands holding fit points, strongest first.

    Parameters
    ----------
    q : (P,) q of the fit points (1/A); change : (P,) the change of their deviance.
    edges : band edges (1/A).
    """
    band = np.digitize(q, edges) - 1
    out = [(float(edges[b]), float(edges[b + 1]), float(change[band == b].sum()))
           for b in np.unique(band) if 0 <= b < edges.size - 1]
    return sorted(out, key=lambda r: -abs(r[2]))


def nearest_copy(R_fit: np.ndarray, R_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cubic-symmetric copy of ``R_true`` nearest ``R_fit`` and the lab rotation between them.

    Returns ``(w, R_copy)``: ``R_copy = R_true g`` (g in the cubic group) and the rotation vector
    ``w`` (rad) with ``exp([w]_x) R_copy = R_fit``. The path ``exp(s [w]_x) R_copy`` ends at the
    fitted matrix itself, not at a copy of it: the fit's NC relationship is expressed in the
    fitted SL crystal frame, and with another copy of the SL orientation the same relationship
    would put the AL crystals elsewhere (it commutes with no cubic operation but the identity in
    general).
    """
    copies = [R_true @ g for g in Rotation.create_group("O").as_matrix()]
    vectors = [Rotation.from_matrix(R_fit @ c.T).as_rotvec() for c in copies]
    k = int(np.argmin([np.linalg.norm(v) for v in vectors]))
    return vectors[k], copies[k]


def main(argv: list[str] | None = None) -> None:
    from fits.scan.frames import fit_frames
    from fits.scan.settings import settings_from_config
    from fits.scan.setup import setup_from_reduction
    from fits.scan.starts import Start, params_from_row, refine_starts
    from fits.scan.truth import orientation_errors
    from xmodel.config import load_config
    from xmodel.demo import reduce_like
    from xmodel.realspace.single import render_point
    from xmodel.reduced import open_reduced
    from xmodel.reduction import PolarBins

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a reduced realistic scan (/entry/reduction: the polar grid and mask)")
    ap.add_argument("configs", nargs="+", help="experiment config TOML files, merged in order")
    ap.add_argument("--twin", action="append", required=True, help="realistic-twin TOML (repeatable)")
    ap.add_argument("--points", required=True, help="scan points, comma-separated")
    ap.add_argument("--set", action="append", default=[], help="config override TABLE.KEY=VALUE (repeatable)")
    ap.add_argument("--profile", action="store_true", help="the deviance along the fitted rotation")
    ap.add_argument("--pull", action="store_true", help="which q bands pull the orientation from the truth to the fit")
    args = ap.parse_args(argv)

    cfg = load_config(args.configs, args.set)
    settings = settings_from_config(cfg)
    held = settings_from_config(load_config(args.configs, [*args.set, f"fit.vary={HELD_ORIENTATION}"]))
    setup = setup_from_reduction(args.results, cfg, settings)
    scan = open_reduced(args.results)
    bins, mask = PolarBins(scan.q_edges, scan.chi_edges), scan.mask
    print("twin | point | domain | error vs domain: tilt1 tilt2 in-plane (deg) | vs the grains' mean | a (truth) A")
    for twin in args.twin:
        for point in (int(p) for p in args.points.split(",")):
            t0 = time.perf_counter()
            frame = render_point(twin, point)
            polar, _ = reduce_like(frame.counts, frame.experiment.geometry, bins, mask)
            row = fit_frames(polar[None], setup, settings)
            R = np.asarray(row["orientation_matrix"], float)
            t1, t2 = np.asarray(row["tilt1_deg"], float), np.asarray(row["tilt2_deg"], float)
            R_true = np.asarray(frame.truth["orientation_matrix"], float)
            e_dom = orientation_errors(R, R_true[None], t1, t2)[0]
            e_gr = orientation_errors(R, np.asarray(frame.truth["grain_orientation_matrix"], float)[None], t1, t2)[0]
            print(f"{twin} | {point} | {frame.truth['label_name'] or 'empty'} | "
                  + " ".join(f"{v:+.2f}" for v in e_dom) + " | " + " ".join(f"{v:+.2f}" for v in e_gr)
                  + f" | {float(row['lattice_constant'][0]):.2f} ({float(frame.truth['lattice_constant']):.2f})"
                  f" | {time.perf_counter() - t0:.0f} s", flush=True)
            if not (args.profile or args.pull) or not np.all(np.isfinite(R)):
                continue
            w, R_copy = nearest_copy(R[0], R_true)
            angle = float(np.linalg.norm(w))
            if angle == 0.0:
                continue
            start = params_from_row(row, 0, setup, settings)
            obs = polar.reshape(1, -1)[:, setup.index]
            if args.profile:
                steps = np.linspace(-1.5, 1.5, 7) * angle
                starts = [Start(0, start.replace(base_orientation=Rotation.from_rotvec(s * w / angle).as_matrix()
                                                 @ R_copy), f"{np.degrees(s):+.2f}") for s in steps]
                print(f"  deviance along the fitted rotation ({np.degrees(angle):.2f} deg about lab axis "
                      f"{np.round(w / angle, 3)}), orientation held; the fit's own deviance "
                      f"{float(row['objective'][0]):.1f}:")
                for c in refine_starts(setup, obs, starts, held):
                    print(f"    {c.source:>6s} deg: {c.objective:.1f}")
            if args.pull:
                print_pull(setup, obs, start.replace(base_orientation=R_copy), held, w / angle)


def print_pull(setup, obs: np.ndarray, start, held, axis: np.ndarray) -> None:
    """``--pull``: refine ``start`` (the truth's copy nearest the fit) with the orientation held, then
    print the change of each fit point's deviance over a rotation of 2 `PULL_STEP_DEG` about ``axis``
    (lab frame, towards the fit), summed over q bands, and the points that change most."""
    import jax
    import jax.numpy as jnp

    from fits.objective import pointwise_deviance
    from fits.scan.starts import Start, refine_starts

    truth = refine_starts(setup, obs, [Start(0, start, "truth")], held)[0]
    evaluate = jax.jit(setup.model.evaluate)
    observed = obs[0]
    weight = np.where(np.isfinite(observed), setup.weight, 0.0)
    dev = []
    for sign in (-1.0, 1.0):
        turn = Rotation.from_rotvec(sign * np.radians(PULL_STEP_DEG) * axis).as_matrix()
        p = truth.params.replace(base_orientation=jnp.asarray(turn @ np.asarray(truth.params.base_orientation)))
        model = evaluate(setup.model.arrays, p)
        dev.append(np.asarray(pointwise_deviance(model, jnp.asarray(np.nan_to_num(observed)), jnp.asarray(weight)),
                              float))
    change = dev[1] - dev[0]
    q = setup.q[setup.index % setup.q.size]
    chi = setup.chi_deg[setup.index // setup.q.size]
    print(f"  pull at the truth (deviance {truth.objective:.1f}) over {2 * PULL_STEP_DEG:.2f} deg towards the fit: "
          f"total {change.sum():+.1f}; strongest q bands (1/A):")
    for lo, hi, v in pull_by_band(q, change)[:8]:
        print(f"    {lo:.3f}-{hi:.3f}: {v:+.1f}")
    top = np.argsort(change)[:6]
    print("  points pulling most towards the fit: "
          + "; ".join(f"q {q[i]:.4f} chi {chi[i]:+.0f} {change[i]:+.1f}" for i in top))


if __name__ == "__main__":
    main()
