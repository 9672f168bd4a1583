"""Benchmark: SIGKILL ``xmodel fit`` at random times and resume it until the scan is done; the
results must equal those of an uninterrupted run in every dataset of ``/entry/fits`` (NaN = NaN).

Run: ``nice .venv/bin/python benchmarks/kill_resume_fit.py [--kills 20] [--seed 0]``.

A 3 x 3 scan is simulated from the forward model on the coarse polar grid of the fit tests
(tests/fits/scan): Poisson patterns of the red domain, two of them rotated by a few degrees, two
weak ones and an empty one, with scan positions, so that the neighbour passes have frames to
look at. ``xmodel fit`` (one batch per frame, the re-search on one lattice constant to keep
the passes short, the other settings at their defaults) fits it once without interruption, then
again into a second file that is killed with SIGKILL after a random time, drawn uniformly from
the wall time of an uninterrupted run (remeasured whenever a run from scratch finishes, as the
machine's load changes), and restarted, until ``--kills`` kills have landed; a run that finishes
before its kill starts the file afresh. A last run finishes the scan. Each kill's stage (main pass, neighbour pass,
maps) is read from the file's progress attributes. Prints one result line at the end and exits
1 when a dataset differs or a resume fails.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHI = np.arange(180) * 2.0 - 179.0
Q = np.concatenate([np.geomspace(0.06, 0.24, 80), np.geomspace(1.72, 2.3, 24)])
SETS = ["fit.batch=1", "fit.grid_step=0.5"]


def make_scan(path: Path) -> None:
    """Nine frames on a 3 x 3 grid (1 um steps): red patterns (two rotated by 3 and 6 deg about
    the beam), two weak ones (SL scale 150 and 300) and an empty one."""
    from fits.scan.settings import settings_from_config
    from fits.scan.setup import FitSetup
    from xmodel import orientation
    from xmodel.config import default_paths, load_config
    from xmodel.noise import poisson_counts
    from xmodel.parameters import params_from_config

    cfg = load_config(default_paths("red"), SETS)
    setup = FitSetup.build(cfg, Q, CHI, None, settings_from_config(cfg))
    p = params_from_config(cfg).replace(diffuse_scale=45.0, al_scale=20.0, background=0.05)
    base = np.asarray(p.sl_orientation(), float)

    def frame(sl_scale: float, seed: int, rot_deg: float = 0.0) -> np.ndarray:
        q = p.replace(sl_scale=sl_scale)
        if rot_deg:
            q = q.replace(base_orientation=orientation.rotation_about_axis(2, np.radians(rot_deg)) @ base,
                          inplane=0.0, tilt1=0.0, tilt2=0.0)
        img = np.full(CHI.size * Q.size, np.nan)
        img[setup.index] = poisson_counts(np.asarray(setup.model(q), float), seed=seed)
        return img.reshape(CHI.size, Q.size)

    frames = [frame(3000.0, 0), frame(3000.0, 11), frame(3000.0, 2, 3.0), frame(3000.0, 3),
              frame(300.0, 4), frame(3000.0, 5, 6.0), frame(150.0, 6), frame(3000.0, 7), frame(0.0, 8)]
    yx = np.array([[y, x] for y in range(3) for x in range(3)], float)
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"] = np.stack(frames).astype(np.float32)
        g["q"], g["chi"], g["positions"] = Q, CHI, yx


def fit_argv(scan: Path, out: Path) -> list[str]:
    from xmodel.config import default_paths

    sets = [a for s in SETS for a in ("--set", s)]
    return [sys.executable, "-m", "xmodel.cli", "fit", str(scan), *map(str, default_paths("red")),
            "--out", str(out), *sets]


def stage(out: Path, n: int) -> str:
    """Where a run stands: 'start' (no fits yet), 'main k/n', 'pass k', 'done'."""
    if not out.exists():
        return "start"
    try:
        with h5py.File(out, "r") as f:
            if "entry/fits" not in f:
                return "start"
            g = f["entry/fits"]
            done, passes = int(g.attrs.get("frames_done", 0)), int(g.attrs.get("neighbour_passes_done", 0))
            maps = "maps" in g
    except OSError as err:
        return f"unreadable ({err})"
    if done < n:
        return f"main {done}/{n}"
    return "done" if maps else f"pass {passes}"


def differing(a: Path, b: Path) -> tuple[int, list[str]]:
    """Number of datasets compared and the names of those that differ (NaN = NaN)."""
    from fits.scan.results import ALL_DATASETS

    bad = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ga, gb = fa["entry/fits"], fb["entry/fits"]
        names = [*ALL_DATASETS, *(f"maps/{k}/{k}" for k in ga["maps"])]
        for k in names:
            x, y = ga[k][()], gb[k][()]
            same = x.shape == y.shape and (np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f"
                                           else np.array_equal(x, y))
            if not same:
                bad.append(k)
        for k in ("frames_done", "neighbour_passes_done", "neighbour_changed"):
            if ga.attrs.get(k) != gb.attrs.get(k):
                bad.append(f"@{k}")
        if "undo" in ga:
            bad.append("undo left behind")
    return len(names) + 3, bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs that must land before the run may finish")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--keep", metavar="DIR", help="work in this folder and keep the files")
    args = parser.parse_args()
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    rng = np.random.default_rng(args.seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        scan, ref, out = work / "scan.h5", work / "reference.h5", work / "killed.h5"
        for p in (ref, out):
            p.unlink(missing_ok=True)
        make_scan(scan)
        t = time.perf_counter()
        subprocess.run(fit_argv(scan, ref), check=True, env=env, cwd=REPO)
        t_ref = time.perf_counter() - t
        print(f"uninterrupted run: {t_ref:.1f} s; {stage(ref, 9)}")
        kills, runs, where, delay, fresh, put_back = 0, 0, [], 0.0, True, 0
        while True:
            runs += 1
            fresh = fresh or not out.exists()
            t = time.perf_counter()
            proc = subprocess.Popen(fit_argv(scan, out), env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
            if kills < args.kills:
                delay = float(rng.uniform(0.0, t_ref))
                try:
                    proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
            else:
                proc.wait()
            err = proc.stderr.read()
            put_back += err.count("put back the rows")
            if proc.returncode == -signal.SIGKILL:
                kills += 1
                fresh = False
                where.append(stage(out, 9))
                print(f"kill {kills:2d} after {delay:5.1f} s: {where[-1]}", flush=True)
                continue
            if proc.returncode != 0:
                print(f"run {runs} failed (exit {proc.returncode}):\n{err}")
                print(f"RESULT kill_resume_fit: FAILED, a resume exited {proc.returncode} after {kills} kills")
                return 1
            if kills >= args.kills:
                break
            if fresh:               # a whole run: the time the kills are drawn from
                t_ref = time.perf_counter() - t
            print(f"run {runs} finished before its kill (after {delay:.1f} s); starting afresh", flush=True)
            out.unlink()
            fresh = True
        n, bad = differing(out, ref)
        counts = {s: sum(w.split()[0] == s for w in where) for s in ("start", "main", "pass", "done")}
        verdict = "identical" if not bad else f"DIFFERENT in {bad}"
        print(f"RESULT kill_resume_fit: {kills} SIGKILLs over {runs} runs of `xmodel fit` on a 3 x 3 scan (the "
              f"file at the kill: {counts['start']} without fits, {counts['main']} in the main pass, "
              f"{counts['pass']} with the main pass done and the neighbour passes unfinished, {counts['done']} "
              f"with the maps written; {put_back} resumes put back a neighbour pass written but not recorded); "
              f"final /entry/fits {verdict} to the uninterrupted run ({n} datasets and attributes compared, "
              f"NaN-aware)")
        return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
