"""Speed-up of the dask-distributed reduction and fit from 1 to 2 local workers, and a cost model for N nodes.

Usage: python benchmarks/scale_out.py RESULTS.h5 [--master MASTER.h5] [--block 8x8] [--at 12,12]
       [--tile 4x4] [--domain red] [--frames 14641] [--cores-per-node 32]

The fit: a block of ``--block`` scan points at grid position ``--at`` of a reduced scan is copied
into a small reduced file (frames, bins, positions) and fitted whole (main pass and neighbour
passes, `fits.scan.tiles.fit_tiles`) on a `distributed.LocalCluster` of 1 and then 2
single-threaded worker processes, each warmed up first (its `FitSetup` built and one frame
fitted, so that compiling is not timed). The reduction (with ``--master``, the scan's Eiger
master): the frames of the same block are read and reduced tile by tile on the same clusters
(`xmodel.distributed`, without writing). Separately, in this process: the writer's throughput
(rows of fits and polar images written per second), the fixed cost of one neighbour-pass task
(its scratch file and the neighbour search over the whole scan, which the halo needs), the
halo's size for the tile shape, and the latency of one task on the cluster.

It prints the machine and its load before and after, the wall times and speed-ups, and a cost
model for a scan of ``--frames`` frames on N nodes of ``--cores-per-node`` workers:

    main pass   T = F c_frame / K + (F / S) t_task / K,   at least F / writer_rate
    passes      T = n_pass_tasks (t_halo + c_pass) / K

with F frames, S frames per tile, K = N x cores workers, c_frame the CPU seconds per frame of the
main pass and c_pass those of one neighbour-pass task (measured on the block with one worker: what
a dedicated core takes, whatever else runs on this machine), n_pass_tasks the tiles with doubtful
frames (the block's share of them), t_task the per-task overhead (latency, the client reading a
tile's images and writing its rows) and t_halo the fixed cost of a pass task. Figures:
docs/performance.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent

from xmodel.cli import enable_compilation_cache

enable_compilation_cache()                 # before JAX: the worker processes share the compiled code

import h5py
import numpy as np

_spec = importlib.util.spec_from_file_location("benchmark_fit", _HERE / "fit.py")
_fit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fit)
machine = _fit.machine                      # benchmarks/fit.py: cores, CPU, load, versions

from fits.scan import results as store
from fits.scan.neighbours import neighbours
from fits.scan.settings import FitSettings
from fits.scan.tiles import _write_main, fit_tiles, jax_options, pass_tile
from xmodel.config import default_paths, load_config
from xmodel.distributed import parse_tile, plan_tiles, run_tasks
from xmodel.positions import derive_grid
from xmodel.reduced import GROUP, open_reduced


def block_file(src: str, dst: Path, block: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    """Copy the frames of a block of the scan grid into a small reduced file; returns their indices."""
    scan = open_reduced(src)
    grid = scan.grid
    sel = np.flatnonzero((grid.row >= at[0]) & (grid.row < at[0] + block[0]) &
                         (grid.col >= at[1]) & (grid.col < at[1] + block[1]))
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        r = g.create_group(GROUP)
        s = f[GROUP]
        r.create_dataset("polar", data=s["polar"][sel.tolist()], chunks=(1,) + s["polar"].shape[1:])
        for key in ("q", "chi", "q_edges", "chi_edges", "counts", "radial_counts", "mask"):
            if key in s:
                r[key] = s[key][()]
        r["positions"] = scan.positions_um[sel]
        r["invalid_pixels"] = np.zeros(sel.size, np.int32)
    return sel


def warm(dask_worker=None, scan=None, cfg=None, settings=None, options=None) -> float:
    """On every worker: build the fit setup and fit one frame (compiling), so that it is not timed."""
    from fits.scan.frames import fit_frames
    from fits.scan.tiles import _setup

    t = time.perf_counter()
    setup = _setup(scan, cfg, settings, options)
    fit_frames(scan.polar([0]), setup, settings)
    return time.perf_counter() - t


def timed_reduce(master: str, poni, frames, bin_map) -> tuple[int, float]:
    """Task: read and reduce frames of the master; (frames, seconds)."""
    from xmodel.distributed import _reduce_tile

    t = time.perf_counter()
    _reduce_tile(master, poni, frames, bin_map)
    return len(frames), time.perf_counter() - t


def noop(payload) -> int:
    return len(payload)


def cpu_seconds(dask_worker=None) -> float:
    """CPU seconds the worker process has used (all its threads)."""
    return time.process_time()


def cluster_run(workers: int, args, block_path: Path, tmp: Path, cfg, settings, tile, master_frames) -> dict:
    """Fit the block (and reduce its frames) on a local cluster of ``workers`` processes: wall and
    worker CPU seconds of the main pass, the neighbour passes and the reduction."""
    from distributed import Client, LocalCluster

    out = {}
    scan = open_reduced(block_path)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:

        def cpu() -> float:
            return sum(client.run(cpu_seconds).values())

        t = time.perf_counter()
        client.run(warm, scan=scan, cfg=cfg, settings=settings, options=jax_options())
        out["warm_s"] = time.perf_counter() - t
        payload = np.zeros(scan.polar([0]).size * tile[0] * tile[1], np.float32)
        t = time.perf_counter()
        for _ in range(5):
            client.submit(noop, payload, pure=False).result()
        out["latency_s"] = (time.perf_counter() - t) / 5
        fits = tmp / f"fits_{workers}.h5"
        store.prepare(fits, scan.n_frames, block_path, cfg, settings)
        n_tiles = len(plan_tiles(scan.n_frames, scan.grid, tile))
        c0 = cpu()
        main = fit_tiles(fits, scan, cfg, settings, client, progress=False, tile=tile, stop_after=n_tiles)
        c1 = cpu()
        passes = fit_tiles(fits, scan, cfg, settings, client, progress=False, tile=tile)
        c2 = cpu()
        out.update(main_s=main.main_s, passes_s=passes.passes_s, main_cpu=c1 - c0, passes_cpu=c2 - c1,
                   pass_tiles=sum(passes.pass_tiles.values()), fits=fits)
        if master_frames is not None:
            from xmodel.io import open_scan
            from xmodel.reduction import build_bin_map, default_bins

            with open_scan(args.master) as s:
                bin_map = build_bin_map(s.geometry.q(), s.geometry.chi(), s.mask,
                                        default_bins(s.geometry, s.mask, n_q=500, n_chi=360, q_spacing="log"))
            shared = client.scatter(bin_map, broadcast=True, hash=False)
            jobs = [(k, (str(args.master), None, t_, shared)) for k, t_ in enumerate(master_frames)]
            c0, t = cpu(), time.perf_counter()
            run_tasks(client, timed_reduce, jobs, lambda _, r: None)
            out["reduce_s"], out["reduce_cpu"] = time.perf_counter() - t, cpu() - c0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--master", help="the scan's Eiger master (also time the reduction)")
    ap.add_argument("--block", default="8x8", help="scan points fitted, ROWSxCOLS")
    ap.add_argument("--at", default="18,18",
                    help="grid row,col of the block's first point (18,18 of the 31 x 31 twin: orange and yellow "
                         "domains and their grain boundary)")
    ap.add_argument("--tile", default="4x4", help="scan points per task")
    ap.add_argument("--domain", default="red", help="config of the starting values")
    ap.add_argument("--frames", type=int, default=121 * 121, help="frames of the scan the model is for")
    ap.add_argument("--cores-per-node", type=int, default=32)
    a = ap.parse_args()
    block, tile = parse_tile(a.block), parse_tile(a.tile)
    at = tuple(int(v) for v in a.at.split(","))
    print("command:", shlex.join([os.path.basename(sys.executable)] + sys.argv))
    print("machine:", machine())
    cfg = load_config(default_paths(a.domain))
    settings = FitSettings.of(cache_dir=os.path.expanduser("~/.cache/xmodel"))
    with tempfile.TemporaryDirectory(prefix="xmodel-bench-") as tmp:
        tmp = Path(tmp)
        block_path = tmp / "block.h5"
        sel = block_file(a.results, block_path, block, at)
        scan = open_reduced(block_path)
        master_frames = None
        if a.master:
            full = open_reduced(a.results)
            master_frames = [sel[np.isin(sel, t)] for t in plan_tiles(full.n_frames, full.grid, tile)]
            master_frames = [t for t in master_frames if t.size]
        print(f"block: {sel.size} frames ({block[0]}x{block[1]} at {at}) of {a.results}; tiles {tile[0]}x{tile[1]}")
        runs = {w: cluster_run(w, a, block_path, tmp, cfg, settings, tile, master_frames) for w in (1, 2)}
        for w, r in runs.items():
            line = (f"{w} worker(s): warm-up {r['warm_s']:.1f} s; fit main pass {r['main_s']:.1f} s wall, "
                    f"{r['main_cpu']:.0f} CPU-s ({r['main_cpu'] / r['main_s']:.2f} cores); neighbour passes "
                    f"{r['passes_s']:.1f} s wall, {r['passes_cpu']:.0f} CPU-s "
                    f"({r['passes_cpu'] / max(r['passes_s'], 1e-9):.2f} cores, {r['pass_tiles']} tasks)")
            if "reduce_s" in r:
                line += (f"; reduce {r['reduce_s']:.1f} s wall, {r['reduce_cpu']:.0f} CPU-s "
                         f"({r['reduce_cpu'] / r['reduce_s']:.2f} cores)")
            print(line)
        one, two = runs[1], runs[2]
        print(f"speed-up 1 -> 2 workers (wall): fit main pass {one['main_s'] / two['main_s']:.2f}x, passes "
              f"{one['passes_s'] / max(two['passes_s'], 1e-9):.2f}x"
              + (f", reduce {one['reduce_s'] / two['reduce_s']:.2f}x" if "reduce_s" in one else "")
              + "; the cores the workers got are in brackets above (other jobs share the machine)")
        same = bool(np.array_equal(store.read_fits(one["fits"])["status"], store.read_fits(two["fits"])["status"]))
        print(f"1 and 2 workers give the same statuses: {same}")
        model(a, scan, sel, tile, one, tmp, block_path, cfg, settings)
    print("machine at the end:", machine())


def model(a, scan, sel: np.ndarray, tile: tuple[int, int], one: dict, tmp: Path, block_path: Path, cfg,
          settings) -> None:
    """Measure the rest of the cost model's inputs in this process and print the model."""
    import dataclasses

    from fits.scan.tiles import _state
    from xmodel.positions import grid_positions

    per_tile = tile[0] * tile[1]
    tiles = plan_tiles(scan.n_frames, scan.grid, tile)
    t0 = time.perf_counter()
    for t in tiles:
        scan.polar(t)
    t_read = (time.perf_counter() - t0) / len(tiles)
    # the writer on a results file of --frames frames: rows of one tile written 20 times
    r1 = store.read_fits(one["fits"])
    rows = {k: np.resize(v[tiles[0]], (per_tile,) + v.shape[1:]) for k, v in r1.items() if k in store.ALL_DATASETS}
    scratch = tmp / "writer.h5"
    store.prepare(scratch, a.frames, block_path, cfg, settings)
    done = _state(scratch, a.frames)
    t0 = time.perf_counter()
    for k in range(20):
        _write_main(scratch, np.arange(k * per_tile, (k + 1) * per_tile), rows, done)
    writer_rate = 20 * per_tile / (time.perf_counter() - t0)
    # a pass task's fixed cost on a scan of --frames frames (its neighbour search runs over all of them)
    side = int(np.sqrt(a.frames))
    pos = grid_positions((side, side), (0.25, 0.25), "raster")
    big = dataclasses.replace(open_reduced(block_path), n_frames=pos.shape[0], positions_um=pos,
                              grid=derive_grid(pos))
    nbs = neighbours(pos, settings.neighbours.neighbour_radius_steps)
    big_tiles = plan_tiles(pos.shape[0], big.grid, tile)
    own = big_tiles[len(big_tiles) // 2]
    sub = np.union1d(own, np.concatenate([nbs[i] for i in own]))
    for _ in range(2):                                       # the first builds the fit setup
        t0 = time.perf_counter()
        pass_tile(big, sub, np.isin(sub, own), store.empty_results(sub.size), {}, None, True, cfg, settings,
                  jax_options())
        t_halo = time.perf_counter() - t0
    halo = (sub.size - own.size) / own.size
    c_frame = one["main_cpu"] / sel.size
    c_pass = one["passes_cpu"] / max(1, one["pass_tiles"])
    t_task = one["latency_s"] + t_read + per_tile / writer_rate
    share = one["pass_tiles"] / len(tiles)
    n_pass_tasks = share * a.frames / per_tile
    print(f"cost model inputs (CPU seconds: what a dedicated core takes): main pass c_frame {c_frame:.3f} CPU-s "
          f"per frame; a neighbour-pass task on the block {c_pass:.1f} CPU-s ({one['pass_tiles']} of "
          f"{len(tiles)} tiles had doubtful frames); per task t_task {t_task * 1e3:.0f} ms (latency "
          f"{one['latency_s'] * 1e3:.0f} ms, reading a tile's images {t_read * 1e3:.0f} ms, writing its rows); "
          f"writer {writer_rate:.0f} frames/s; a pass task's fixed cost t_halo {t_halo:.2f} s on {pos.shape[0]} "
          f"frames (its halo: {halo:.0%} of a tile's frames)"
          + (f"; reduction {one['reduce_cpu'] / sel.size:.3f} CPU-s per frame" if "reduce_cpu" in one else ""))
    print(f"model: {a.frames} frames, nodes of {a.cores_per_node} single-threaded workers, tiles of {per_tile} "
          f"frames, {n_pass_tasks:.0f} neighbour-pass tasks (the block's share), one pass:")
    print("  nodes  main pass (min)  writer floor (min)  passes (min)  total (min)  frames/s")
    for nodes in (1, 2, 4, 8, 16, 32):
        k = nodes * a.cores_per_node
        main_s = max(a.frames * c_frame / k + a.frames / per_tile * t_task / k, a.frames / writer_rate)
        passes_s = n_pass_tasks * (t_halo + c_pass) / k
        print(f"  {nodes:5d}  {main_s / 60:15.1f}  {a.frames / writer_rate / 60:18.2f}  {passes_s / 60:12.1f}  "
              f"{(main_s + passes_s) / 60:11.1f}  {a.frames / (main_s + passes_s):8.1f}")


if __name__ == "__main__":
    main()
