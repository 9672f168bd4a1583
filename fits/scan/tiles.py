"""The scan fit on a dask cluster: spatial tiles fitted on workers, one writer, resumable.

`fit_tiles` is `fits.scan.driver.fit_scan` with a scheduler (`xmodel.distributed`). The main pass
sends each tile of the scan grid (`xmodel.distributed.plan_tiles`) with its polar images to a
worker, which fits them (`fits.scan.driver.fit_batches`, in batches of ``run.batch``) and returns
the rows; this process writes them as tiles complete. Each neighbour pass then runs per tile:
the tile's own frames plus a halo, the scan neighbours of its frames
(`fits.scan.neighbours.neighbours`), whose rows are the starts and the votes of the pass
(`fits.scan.neighbours.neighbour_pass`, unchanged, on the worker). This process is the only
reader and writer of the HDF5 files: the workers need no shared file system.

Identical results. A frame's pass result depends only on its own row and those of its
neighbours before the pass, so every tile of pass k reads the rows of pass k - 1 and the
changed rows are applied together when the pass is complete. On the worker the frames outside
the tile and its halo are moved far away (`tile_positions`), so the pass finds for every frame of
the tile the neighbours it has in the whole scan, provided the scan step it derives (the median
nearest-neighbour distance) is the one of the whole scan: `tiles_are_exact` checks this for
every tile before the passes, and where it fails (irregular positions) the passes run in this
process as in a single-process run (a warning says so). The halo frames' ring significance is
hidden from the worker's pass, so only the tile's own frames are refitted. Fits of a frame do
not depend on the frames batched with it (batched refinement is per row), so the statuses and
parameters equal those of `fit_scan` without a scheduler (tests/xmodel/test_distributed.py).

Resume. While a distributed run is unfinished, ``/entry/fits/tiles`` (an NXcollection) records
``frame_done`` (N,), the frames of the main pass written in any order (``frames_done`` stays the
first frame not written), ``last_changed``, the frames the last pass changed, and for a pass in
progress ``pass`` with one group ``tile_<t>`` per finished tile that had doubtful frames, holding
the rows it changed (attribute ``done`` written last). A killed run resumes with the tiles not
yet written; nothing is lost or computed twice. The group is deleted when the run is complete.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from fits.scan import results as store
from fits.scan.driver import fit_batches
from fits.scan.neighbours import doubtful, neighbour_pass, neighbours
from fits.scan.second_grain import flag_second_grains
from fits.scan.settings import FitSettings
from fits.scan.setup import FitSetup, setup_from_reduction
from xmodel import nexus
from xmodel.distributed import DEFAULT_TILE, open_client, plan_tiles, run_tasks
from xmodel.progress import progress_bar
from xmodel.reduced import ReducedScan

log = logging.getLogger(__name__)

#: the group of this module's bookkeeping while a distributed run is unfinished
TILES = store.FITS + "/tiles"

#: JAX settings the workers take from the process that runs the fit: its precision (equal results)
#: and its compilation cache (the workers of a node compile each program once)
JAX_OPTIONS = ("jax_enable_x64", "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
               "jax_persistent_cache_min_entry_size_bytes")

_SETUPS: dict = {}
_SETUPS_LOCK = threading.Lock()


@dataclass(frozen=True)
class TileReport:
    """What one call of `fit_tiles` computed.

    Attributes
    ----------
    tiles : main-pass tiles fitted
    frames : frames fitted in the main pass
    pass_tiles : neighbour pass (0 the first) -> tiles run in it
    complete : every frame and every neighbour pass is done
    main_s, passes_s : wall seconds of the main pass and of the neighbour passes
    """

    tiles: int = 0
    frames: int = 0
    pass_tiles: dict = dataclasses.field(default_factory=dict)
    complete: bool = False
    main_s: float = 0.0
    passes_s: float = 0.0


# ----------------------------------------------------------------------------- on the workers
def jax_options() -> dict:
    """The `JAX_OPTIONS` of this process, for the workers (`_setup`)."""
    import jax

    return {k: getattr(jax.config, k) for k in JAX_OPTIONS}


def _setup(scan: ReducedScan, cfg, settings: FitSettings, options: dict) -> FitSetup:
    """The worker's `FitSetup` of this scan, config and settings (built once per worker process),
    after taking the `JAX_OPTIONS` of the process that runs the fit."""
    import jax

    for k, v in options.items():
        if getattr(jax.config, k) != v:
            jax.config.update(k, v)
    key = _setup_key(scan, cfg, settings, bool(options["jax_enable_x64"]))
    with _SETUPS_LOCK:
        if key not in _SETUPS:
            _SETUPS[key] = setup_from_reduction(scan, cfg, settings)
        return _SETUPS[key]


def _setup_key(scan: ReducedScan, cfg, settings: FitSettings, x64: bool) -> tuple:
    import json

    return (str(Path(scan.path).resolve()), json.dumps(cfg.to_dict(), sort_keys=True, default=str),
            json.dumps(settings.to_flat(), sort_keys=True), bool(x64))


def fit_tile(scan: ReducedScan, frames: np.ndarray, polar: np.ndarray, cfg, settings: FitSettings,
             options: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Task: fit the polar images (B, C, Q) of the frames ``frames`` of one tile in batches of
    ``settings.run.batch``; returns ``(frames, rows)`` in the schema of `fits.scan.results`.

    A batch that raises is recorded as failed frames, as in `fits.scan.driver.fit_scan`.
    """
    setup = _setup(scan, cfg, settings, options)
    n = len(frames)
    parts = [r for _, r in fit_batches(lambda a, b: polar[a:b], setup, settings, range(0, n, settings.run.batch), n,
                                       where=f"tile of frames {frames[0]} to {frames[-1]}")]
    return frames, {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@dataclass(frozen=True)
class _TileScan(ReducedScan):
    """A reduced scan whose polar images are the few a tile's pass needs, held in memory."""

    images: dict = dataclasses.field(default_factory=dict)

    def _read(self, name: str, frames) -> np.ndarray:
        idx = np.arange(self.n_frames)[frames] if isinstance(frames, slice) else np.asarray(frames, int)
        missing = [int(i) for i in np.atleast_1d(idx) if int(i) not in self.images]
        if name != "polar" or missing:
            raise KeyError(f"the neighbour pass of a tile asked for {name} of frames {missing[:5]} that its "
                           f"doubtful frames do not include: the tile's pass differs from the whole scan's")
        return np.stack([self.images[int(i)] for i in np.atleast_1d(idx)]).reshape(np.shape(idx) + (
            next(iter(self.images.values())).shape))


def tile_positions(positions_um: np.ndarray, subset: np.ndarray, radius_steps: float) -> np.ndarray:
    """Scan positions with the frames outside ``subset`` (bool, N) moved far away as one block.

    The block keeps its own spacing and lies further than ``radius_steps`` scan steps from every
    frame of the subset, so a neighbour search finds the subset's frames only among themselves.
    """
    pos = np.asarray(positions_um, float).copy()
    span = float(np.ptp(pos, axis=0).max()) if pos.shape[0] else 0.0
    pos[~subset] += (2.0 + float(radius_steps)) * (2.0 * span + 1.0)
    return pos


def pass_tile(scan: ReducedScan, subset: np.ndarray, own: np.ndarray, rows: dict[str, np.ndarray],
              images: dict[int, np.ndarray], near: np.ndarray | None, research: bool, cfg,
              settings: FitSettings, options: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Task: one neighbour pass of one tile; returns the frames it changed and their new rows.

    Parameters
    ----------
    scan : the reduced scan's description (positions, bins; no images are read)
    subset : (M,) increasing frame indices of the tile and its halo
    own : (M,) bool, True for the tile's own frames
    rows : the fits of the ``subset`` frames before the pass (`fits.scan.results` schema)
    images : polar images of the tile's doubtful frames (`fits.scan.neighbours.doubtful`)
    near, research : as `fits.scan.neighbours.neighbour_pass`
    options : the `JAX_OPTIONS` of the process that runs the fit
    """
    setup = _setup(scan, cfg, settings, options)
    n = scan.n_frames
    inside = np.zeros(n, bool)
    inside[subset] = True
    full = store.empty_results(n)
    for k, v in rows.items():
        full[k][subset] = v
    full["significance"][subset[~own]] = np.nan          # halo frames are neighbours only, never refitted
    local = _TileScan(**{f.name: getattr(scan, f.name) for f in dataclasses.fields(ReducedScan)},
                      images=images)
    local = dataclasses.replace(local, positions_um=tile_positions(scan.positions_um, inside,
                                                                   settings.neighbours.neighbour_radius_steps))
    with tempfile.TemporaryDirectory(prefix="xmodel-tile-") as tmp:
        path = Path(tmp) / "fits.h5"
        with h5py.File(path, "w") as f:
            g = f.require_group(store.FITS)
            for k in store.ALL_DATASETS:
                g.create_dataset(k, data=full[k], dtype=store.dtype_of(k))
            g.attrs["frames_done"] = n
        changed = np.asarray(neighbour_pass(path, local, setup, settings, progress=False, near=near,
                                            research=research), int)
        changed = changed[own[np.searchsorted(subset, changed)]] if changed.size else changed
        return changed, (store.read_rows(path, changed) if changed.size else {})


# ----------------------------------------------------------------------------- bookkeeping
def _state(out: Path, n: int) -> np.ndarray:
    """``frame_done`` of ``out`` (created from ``frames_done`` at the start of a distributed run)."""
    with h5py.File(out, "a") as f:
        g = f[store.FITS]
        if "tiles" not in g:
            t = nexus.require_group(g, "tiles", "NXcollection")
            t.attrs["description"] = ("bookkeeping of an unfinished distributed run (fits.scan.tiles): frames "
                                      "written, the last neighbour pass's changes, the tiles of a pass in progress")
            t.create_dataset("frame_done", data=(np.arange(n) < int(g.attrs["frames_done"])).astype(np.uint8))
        done = f[TILES]["frame_done"][()].astype(bool)
        return done | (np.arange(n) < int(g.attrs["frames_done"]))


def _write_main(out: Path, frames: np.ndarray, rows: dict[str, np.ndarray], done: np.ndarray) -> None:
    """Write one tile's rows, then mark its frames done and advance ``frames_done`` (flushed)."""
    n = done.size
    full = {k: np.empty((n,) + store.row_shape(k), object if k in ("configuration", "message") else v.dtype)
            for k, v in rows.items()}
    for k, v in rows.items():
        full[k][frames] = v
    store.write_frames(out, frames, full)
    done[frames] = True
    with h5py.File(out, "a") as f:
        f[TILES]["frame_done"][np.sort(frames).tolist()] = 1
        f[store.FITS].attrs["frames_done"] = int(np.argmin(done)) if not done.all() else n
        f.flush()


def _open_pass(out: Path, k: int, research: bool, tile: tuple[int, int]) -> tuple[set[int], tuple[int, int]]:
    """Start pass ``k`` or find the one in progress: (tiles done, tile shape it runs with)."""
    with h5py.File(out, "a") as f:
        t = f[TILES]
        p = t.get("pass")
        if p is not None and int(p.attrs["pass"]) != k:
            del t["pass"]                                  # a pass another run finished meanwhile
            p = None
        if p is None:
            p = nexus.require_group(t, "pass", "NXcollection")
            p.attrs["pass"], p.attrs["research"], p.attrs["tile"] = k, int(research), np.asarray(tile)
        done = set()
        for name in list(p):
            if p[name].attrs.get("done", 0):
                done.add(int(name.split("_")[1]))
            else:
                del p[name]                                # written when the run was killed: redo
        return done, tuple(int(v) for v in p.attrs["tile"])


def _stage(out: Path, t: int, frames: np.ndarray, rows: dict[str, np.ndarray]) -> None:
    """Record the rows tile ``t`` changed in the pass in progress (its ``done`` mark last)."""
    with h5py.File(out, "a") as f:
        g = f[TILES]["pass"].create_group(f"tile_{t}")
        g.create_dataset("frames", data=np.asarray(frames, np.int64))
        for k, v in rows.items():
            if k in store.ALL_DATASETS:
                g.create_dataset(k, data=v.astype(object) if v.dtype.kind == "U" else v, dtype=store.dtype_of(k))
        f.flush()
        g.attrs["done"] = 1
        f.flush()


def _apply_pass(out: Path, r: dict[str, np.ndarray]) -> np.ndarray:
    """Write the staged rows of the finished pass into the fits; returns the frames changed."""
    values = {k: v for k, v in store.editable_rows(r).items() if k in store.ALL_DATASETS}
    changed = []
    with h5py.File(out, "r") as f:
        for g in f[TILES]["pass"].values():
            frames = g["frames"][()]
            changed.append(frames)
            for k in store.ALL_DATASETS:
                if k in g:
                    v = g[k][()]
                    values[k][frames] = [x.decode() if isinstance(x, bytes) else x for x in v] \
                        if v.dtype.kind == "O" else v
    changed = np.unique(np.concatenate(changed)) if changed else np.zeros(0, int)
    if changed.size:
        store.write_frames(out, changed, values)
    return changed


def _finish_pass(out: Path, k: int, changed: np.ndarray, n_passes: int) -> None:
    store.set_neighbour_passes_done(out, k + 1 if changed.size else n_passes)
    with h5py.File(out, "a") as f:
        t = f[TILES]
        if "last_changed" in t:
            del t["last_changed"]
        t.create_dataset("last_changed", data=np.asarray(changed, np.int64)).attrs["pass"] = k
        del t["pass"]


def _last_changed(out: Path, k: int) -> np.ndarray | None:
    """The frames pass ``k`` changed, if this module recorded them (not when a single-process run
    did the pass)."""
    with h5py.File(out, "r") as f:
        t = f.get(TILES)
        if t is None or "last_changed" not in t or int(t["last_changed"].attrs.get("pass", -1)) != k:
            return None
        return t["last_changed"][()]


def _drop_state(out: Path) -> None:
    with h5py.File(out, "a") as f:
        if TILES in f:
            del f[TILES]


# ----------------------------------------------------------------------------- the run
def tiles_are_exact(positions_um: np.ndarray, radius_steps: float, subsets: list[np.ndarray]) -> list[int]:
    """Tiles (indices into ``subsets``, each a tile with its halo) whose moved-apart positions
    (`tile_positions`) give another scan step than the whole scan: there a tile's neighbour pass
    could differ from the single-process one. Empty for positions on a regular grid."""
    from scipy.spatial import cKDTree

    def step(pos: np.ndarray) -> float:
        d, _ = cKDTree(pos).query(pos, k=2)
        return float(np.median(d[:, 1])) if pos.shape[0] > 1 else 1.0

    whole = step(np.asarray(positions_um, float))
    bad = []
    for t, sub in enumerate(subsets):
        inside = np.zeros(positions_um.shape[0], bool)
        inside[sub] = True
        if step(tile_positions(positions_um, inside, radius_steps)) != whole:
            bad.append(t)
    return bad


def fit_tiles(out: Path, scan: ReducedScan, cfg, settings: FitSettings, scheduler, *, progress: bool = True,
              stop_after: int | None = None, setup: FitSetup | None = None,
              tile: tuple[int, int] = DEFAULT_TILE) -> TileReport:
    """Fit the frames of ``scan`` not yet in ``out`` and run its neighbour passes on a dask cluster.

    Parameters
    ----------
    out : file whose ``/entry/fits`` `fits.scan.results.prepare` created or checked
    scan : the reduced scan (`xmodel.reduced.open_reduced`)
    cfg, settings : as `fits.scan.driver.fit_scan`
    scheduler : ``"local"``, ``"local:N"``, an address, a scheduler file or a ``distributed.Client``
        (`xmodel.distributed.open_client`)
    stop_after : stop after this many tiles of the main pass and the passes together (tests of
        the resume path)
    setup : a prebuilt `FitSetup` for ``cfg`` and ``settings`` (workers in this process use it)
    tile : (rows, cols) scan points per task

    Returns
    -------
    TileReport
    """
    import jax

    out = Path(out)
    n = scan.n_frames
    options = jax_options()
    if setup is not None:
        with _SETUPS_LOCK:
            _SETUPS[_setup_key(scan, cfg, settings, bool(jax.config.jax_enable_x64))] = setup
    done = _state(out, n)
    tiles = plan_tiles(n, scan.grid, tile)
    budget = np.inf if stop_after is None else int(stop_after)
    report = {"tiles": 0, "frames": 0, "pass_tiles": {}}
    with open_client(scheduler) as client:
        # a key of its own: a hashed key shared with an earlier run on the same client could be
        # released by that run's end after this run found it ("lost dependencies")
        shared = client.scatter(scan, broadcast=True, hash=False)
        todo = [t[~done[t]] for t in tiles]
        todo = [t for t in todo if t.size]
        bar = progress_bar(n, desc="xmodel fit", unit="frames", enabled=bool(progress), initial=int(done.sum()))

        def write(_, result) -> None:
            frames, rows = result
            _write_main(out, frames, rows, done)
            report["tiles"] += 1
            report["frames"] += frames.size
            bar.update(frames.size)

        jobs = [(k, lambda t=t: (shared, t, scan.polar(t).astype(np.float32), cfg, settings, options))
                for k, t in enumerate(todo)]
        t0 = time.perf_counter()
        budget -= run_tasks(client, fit_tile, jobs, write, stop_after=None if budget == np.inf else int(budget))
        bar.close()
        t1 = time.perf_counter()
        complete = bool(done.all()) and _passes(out, scan, cfg, settings, client, shared, options, tile, budget,
                                                report, progress, setup)
        t2 = time.perf_counter()
    if complete and not store.second_grains_done(out):   # here: a model evaluation per boundary pair
        flag_second_grains(out, scan, setup or setup_from_reduction(scan, cfg, settings), settings, progress)
    store.write_maps(out, scan)
    if complete:
        _drop_state(out)
    return TileReport(report["tiles"], report["frames"], report["pass_tiles"], complete, t1 - t0, t2 - t1)


def _passes(out: Path, scan: ReducedScan, cfg, settings: FitSettings, client, shared, options: dict,
            tile: tuple[int, int], budget: float, report: dict, progress: bool, setup: FitSetup | None) -> bool:
    """The neighbour passes, tile by tile; True when all are done."""
    ns = settings.neighbours
    n_passes = ns.neighbour_passes
    _, passes_done = store.progress(out)
    if passes_done >= n_passes:
        return True
    if scan.positions_um is None:                      # as neighbour_passes: nothing to compare with
        store.set_neighbour_passes_done(out, n_passes)
        return True
    nbs = neighbours(scan.positions_um, ns.neighbour_radius_steps)
    with h5py.File(out, "r") as f:
        stored = f[TILES].get("pass")
        if stored is not None:
            tile = tuple(int(v) for v in stored.attrs["tile"])
    own_tiles = plan_tiles(scan.n_frames, scan.grid, tile)
    subsets = [np.union1d(own, np.concatenate([nbs[i] for i in own]).astype(int)) for own in own_tiles]
    bad = tiles_are_exact(scan.positions_um, ns.neighbour_radius_steps, subsets)
    if bad:
        from fits.scan.neighbours import neighbour_passes

        log.warning("%s: the scan positions are irregular: in %d of %d tiles the neighbour search would find "
                    "another scan step than in the whole scan, so the neighbour passes run in this process",
                    out, len(bad), len(subsets))
        neighbour_passes(out, scan, setup or setup_from_reduction(scan, cfg, settings), settings, progress)
        return store.progress(out)[1] >= n_passes
    last = _last_changed(out, passes_done - 1)
    changed = None if last is None else set(last.tolist())   # unknown: every frame, as neighbour_passes
    for k in range(passes_done, n_passes):
        tiles_done, _ = _open_pass(out, k, k == 0, tile)
        r = store.read_fits(out)
        need = set(doubtful(r, nbs, settings, changed)[0])
        jobs = []
        for t, (own, sub) in enumerate(zip(own_tiles, subsets)):
            mine = sorted(need.intersection(own.tolist()))
            if t in tiles_done or not mine:                # no doubtful frame: the tile's pass changes nothing
                continue
            near = None if changed is None else np.array(sorted(changed.intersection(sub.tolist())), int)
            jobs.append((t, lambda sub=sub, own=own, mine=mine, near=near, r=r, k=k: (
                shared, sub, np.isin(sub, own), {key: v[sub] for key, v in r.items() if key in store.ALL_DATASETS},
                dict(zip(mine, scan.polar(mine).astype(np.float32))), near, k == 0, cfg, settings, options)))

        def stage(t, result, k=k) -> None:
            frames_t, rows_t = result
            _stage(out, t, frames_t, rows_t)
            report["pass_tiles"][k] = report["pass_tiles"].get(k, 0) + 1

        if budget <= 0:
            return False
        ran = run_tasks(client, pass_tile, jobs, stage, stop_after=None if budget == np.inf else int(budget))
        budget -= ran
        if ran < len(jobs):
            return False
        new = _apply_pass(out, r)
        _finish_pass(out, k, new, n_passes)
        if progress:
            log.info("xmodel fit: neighbour pass %d: %d frames improved (%d tiles)", k + 1, new.size, len(jobs))
        if not new.size:
            break
        changed = set(new.tolist())
    return True
