"""Tests of the dask-distributed reduction and fit (xmodel/distributed.py, fits/scan/tiles.py): a
2-worker LocalCluster gives the single-process results, and a run stopped after some tiles
resumes with nothing lost or computed twice."""
from __future__ import annotations

import shutil
import sys

import h5py
import numpy as np
import pytest

from fits.scan import results as store
from fits.scan.driver import fit_scan
from fits.scan.frames import fit_frames
from fits.scan.neighbours import doubtful, neighbour_passes, neighbours
from fits.scan.results import read_fits
from fits.scan.settings import FitSettings
from fits.scan.setup import FitSetup
from fits.scan.tiles import TILES, fit_tiles, tiles_are_exact
from fits.status import FitStatus
from xmodel import orientation
from xmodel.cli import main
from xmodel.config import default_paths, load_config
from xmodel.dectris import write_scan
from xmodel.distributed import parse_scheduler, parse_tile, plan_tiles
from xmodel.geometry import Geometry
from xmodel.noise import poisson_counts
from xmodel.parameters import params_from_config
from xmodel.positions import derive_grid, grid_positions
from xmodel.reduced import open_reduced, reduced_frames
from xmodel.reduction import reduce_scan

distributed = pytest.importorskip("distributed")

SHAPE = (60, 50)
CHI = np.arange(180) * 2.0 - 179.0
Q = np.concatenate([np.geomspace(0.06, 0.24, 80), np.geomspace(1.72, 2.3, 24)])
SETTINGS = FitSettings.of(batch=2, max_iter=40, n_candidates=4)


@pytest.fixture(scope="module")
def client():
    """One 2-worker cluster for the module (threads: the workers share this process's compiled JAX code)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


def test_tiles_cover_the_grid_in_blocks():
    grid = derive_grid(grid_positions((3, 4), (1.0, 1.0), "snake"))
    tiles = plan_tiles(12, grid, (2, 2))
    assert sorted(np.concatenate(tiles).tolist()) == list(range(12))
    cells = [sorted(zip(grid.row[t].tolist(), grid.col[t].tolist())) for t in tiles]
    assert cells == [[(0, 0), (0, 1), (1, 0), (1, 1)], [(0, 2), (0, 3), (1, 2), (1, 3)], [(2, 0), (2, 1)],
                     [(2, 2), (2, 3)]]
    assert [t.tolist() for t in plan_tiles(5, None, (1, 2))] == [[0, 1], [2, 3], [4]]
    assert parse_tile("8x4") == (8, 4)
    with pytest.raises(ValueError, match=r"--tile '0x4' is not ROWSxCOLS with positive integers"):
        parse_tile("0x4")


def test_scheduler_values():
    from xmodel.distributed import open_client

    assert parse_scheduler("local:3").workers == 3 and parse_scheduler("local").workers >= 1
    spec = parse_scheduler("local:1x2")
    assert (spec.workers, spec.threads) == (1, 2) and parse_scheduler("local:3").threads == 1
    for bad in ("local:1x0", "local:0x2", "local:2x", "local:x2"):
        with pytest.raises(ValueError, match="positive integer"):
            parse_scheduler(bad)
    assert parse_scheduler("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert parse_scheduler("node12:8786").address == "node12:8786"
    with pytest.raises(ValueError, match=r"number of local workers"):
        parse_scheduler("local:0")
    with pytest.raises(ValueError, match=r"neither an address nor an existing scheduler file"):
        parse_scheduler("no-such-file")
    spec = parse_scheduler("not-yet-written.json")       # a batch job writes it later
    assert spec.scheduler_file == "not-yet-written.json"
    with pytest.raises(FileNotFoundError, match=r"scheduler file not-yet-written.json does not exist"):
        with open_client(spec):
            pass


def test_tiles_are_exact_on_a_grid_and_flagged_on_irregular_positions():
    pos = grid_positions((6, 6), (0.25, 0.25), "raster")
    nbs = neighbours(pos, 1.5)
    subsets = [np.union1d(t, np.concatenate([nbs[i] for i in t])) for t in plan_tiles(36, derive_grid(pos), (3, 3))]
    assert tiles_are_exact(pos, 1.5, subsets) == []
    jittered = pos + np.random.default_rng(0).normal(0, 0.03, pos.shape)
    assert tiles_are_exact(jittered, 1.5, subsets) != []


# ----------------------------------------------------------------------------- the reduction
def _geometry() -> Geometry:
    return Geometry(dist=0.05, poni1=30.3 * 75e-6, poni2=20.7 * 75e-6, rot1=0.0, rot2=0.0, rot3=0.0,
                    wavelength=0.898e-10, pixel1=75e-6, pixel2=75e-6, shape=SHAPE, detector_name="")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A 3 x 4 scan of Poisson frames, some with dummy pixels, 5 frames per data file."""
    tmp = tmp_path_factory.mktemp("raw")
    frames = np.random.default_rng(4).poisson(9.0, (12, *SHAPE)).astype(np.uint32)
    frames[3, 10, 7] = frames[8, 40:42, 30] = frames[11, 5, 5] = 2**32 - 1
    master = write_scan(tmp, "s", iter(frames), 12, _geometry(), positions_um=None, pixel_mask=None,
                        frames_per_file=5)
    return master, grid_positions((3, 4), (0.25, 0.25), "snake")


class Killed(RuntimeError):
    pass


def test_distributed_reduction_equals_single_process_and_resumes(raw, client, tmp_path):
    master, pos = raw
    kw = {"poni": master.parent / "s.poni", "q_bins": 20, "chi_bins": 12, "positions_um": pos, "progress": False}
    ref = reduce_scan(master, tmp_path / "ref.h5", **kw)
    calls = []

    def kill_after_two_tiles(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise Killed("simulated kill")

    out = tmp_path / "dist.h5"
    with pytest.raises(Killed):
        reduce_scan(master, out, **{**kw, "progress": kill_after_two_tiles}, scheduler=client, tile=(2, 2))
    before = int(reduced_frames(out).sum())
    assert before == calls[-1] and 4 <= before < 12
    seen = []
    reduce_scan(master, out, **{**kw, "progress": lambda done, total: seen.append(done)}, scheduler=client,
                tile=(2, 2))
    # only the tiles not written before ran: the counts go up by their frames, to 12 exactly
    assert seen[-1] == 12 and len(seen) == 4 - len(calls)
    with h5py.File(out, "r") as f, h5py.File(ref, "r") as g:
        a, b = f["entry/reduction"], g["entry/reduction"]
        assert a.attrs["frames_done"] == 12
        for name in ("polar", "radial", "invalid_pixels"):
            np.testing.assert_array_equal(a[name][()], b[name][()])
        assert sorted(map(tuple, a["invalid_bins"][()])) == sorted(map(tuple, b["invalid_bins"][()]))
        assert b["invalid_pixels"][()].tolist().count(0) == 9
        np.testing.assert_array_equal(f["entry/intensity_map/intensity"][()], g["entry/intensity_map/intensity"][()])


# ----------------------------------------------------------------------------- the fit
@pytest.fixture(scope="module")
def fit_scan_file(tmp_path_factory):
    """The 4-point scan of tests/fits/scan/test_driver.py (a Conf1 and a Conf2 pattern, an empty and
    a broken frame on a 2 x 2 grid) and its single-process main pass (`fit_frames` batch by batch,
    as `fit_scan` runs it)."""
    tmp = tmp_path_factory.mktemp("tilefit")
    cfg = load_config(default_paths("red"))
    setup = FitSetup.build(cfg, Q, CHI, None, SETTINGS)
    frames = []
    for seed, dom in enumerate(("red", "orange")):
        p = params_from_config(load_config(default_paths(dom)))
        p = p.replace(sl_scale=3000.0, diffuse_scale=45.0, al_scale=20.0, background=0.05)
        img = np.full(CHI.size * Q.size, np.nan)
        img[setup.index] = poisson_counts(np.asarray(setup.model(p), float), seed=seed)
        frames.append(img)
    empty = np.full(CHI.size * Q.size, np.nan)
    empty[setup.index] = poisson_counts(np.full(setup.index.size, 0.05), seed=5)
    broken = frames[0].copy()
    broken[setup.index[:50]] = -3.0
    path = tmp / "results.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"] = np.stack([frames[0], frames[1], empty, broken]).reshape(4, CHI.size, Q.size).astype(np.float32)
        g["q"], g["chi"] = Q, CHI
        g["positions"] = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    polar = open_reduced(path).polar()
    parts = [fit_frames(polar[k:k + SETTINGS.run.batch], setup, SETTINGS) for k in range(0, 4, SETTINGS.run.batch)]
    ref = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {"path": path, "cfg": cfg, "setup": setup, "ref": ref, "tmp": tmp}


def _assert_same_fits(a: dict, b: dict) -> None:
    """Same statuses, messages and configurations; parameters within 1e-6 relative."""
    for key in store.ALL_DATASETS:
        if a[key].dtype.kind == "f":
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_distributed_fit_stopped_and_resumed_gives_the_single_process_results(fit_scan_file, client):
    """The main pass stopped after 2 of its 4 one-frame tiles, resumed; then a frame's fit is spoilt
    (20 deg off, a huge deviance) so that the neighbour passes have work, and the passes, stopped
    after their first tile and resumed, repair it as the single-process passes do."""
    s = fit_scan_file
    out = s["tmp"] / "tiles.h5"
    scan = open_reduced(s["path"])
    store.prepare(out, 4, s["path"], s["cfg"], SETTINGS)
    run = {"cfg": s["cfg"], "settings": SETTINGS, "scheduler": client, "progress": False, "setup": s["setup"],
           "tile": (1, 1)}
    first = fit_tiles(out, scan, **run, stop_after=2)
    assert (first.tiles, first.frames, first.complete) == (2, 2, False)
    with h5py.File(out, "r") as f:
        assert f[TILES]["frame_done"][()].sum() == 2
    second = fit_tiles(out, scan, **run, stop_after=2)
    assert (second.tiles, second.frames, second.pass_tiles, second.complete) == (2, 2, {}, False)
    # the main pass equals the single-process one
    _assert_same_fits(read_fits(out), s["ref"])
    R = read_fits(out)["orientation_matrix"][1]
    with h5py.File(out, "a") as f:
        g = f["entry/fits"]
        g["orientation_matrix"][1] = orientation.rotation_about_axis(0, np.radians(20.0)) @ R
        g["objective"][1] = 1e12
    single = s["tmp"] / "single.h5"
    shutil.copy(out, single)
    neighbour_passes(single, scan, s["setup"], SETTINGS, progress=False)
    r = read_fits(out)
    n_doubtful = len(doubtful(r, neighbours(scan.positions_um, SETTINGS.neighbours.neighbour_radius_steps),
                              SETTINGS, None)[0])
    third = fit_tiles(out, scan, **run, stop_after=1)
    assert (third.tiles, third.pass_tiles, third.complete) == (0, {0: 1}, False)
    fourth = fit_tiles(out, scan, **run)
    # the two frames with signal disagree: both are doubtful; the first pass's staged tile is not run again
    assert n_doubtful == 2 and fourth.complete and fourth.pass_tiles[0] == 1
    fits = read_fits(out)
    assert fits["status"][1] == FitStatus.OK.code and fits["objective"][1] < 1e12
    assert np.degrees(orientation.misorientation_angle(fits["orientation_matrix"][1], R)) < 1.0
    _assert_same_fits(fits, read_fits(single))
    with h5py.File(out, "r") as f, h5py.File(single, "r") as g:
        assert TILES not in f                                        # the bookkeeping goes at the end
        assert f["entry/fits"].attrs["neighbour_passes_done"] == g["entry/fits"].attrs["neighbour_passes_done"]
        np.testing.assert_array_equal(f["entry/fits/maps/status/status"][()], np.reshape(fits["status"], (2, 2)))
    # fit_scan with a scheduler finds the file finished
    assert fit_scan(s["path"], s["cfg"], out, SETTINGS, progress=False, scheduler=client) == out
    np.testing.assert_array_equal(read_fits(out)["objective"], fits["objective"])


# ----------------------------------------------------------------------------- the command line
def test_scheduler_without_dask_names_the_extra(raw, tmp_path, monkeypatch, capsys):
    master, _ = raw
    monkeypatch.setitem(sys.modules, "distributed", None)           # as if dask were not installed
    code = main(["reduce", str(master), "--out", str(tmp_path / "r.h5"), "--scheduler", "local:2"])
    err = capsys.readouterr().err
    assert code == 1 and "optional package 'distributed'" in err and "pip install 'xmodel[distributed]'" in err
    assert not (tmp_path / "r.h5").exists()


def test_bad_scheduler_and_follow_with_scheduler_are_usage_errors(raw, tmp_path, capsys):
    master, _ = raw
    with pytest.raises(SystemExit) as e:
        main(["reduce", str(master), "--out", str(tmp_path / "r.h5"), "--scheduler", "local:x"])
    assert e.value.code == 2 and "number of local workers" in capsys.readouterr().err
    assert main(["reduce", str(master), "--out", str(tmp_path / "r.h5"), "--scheduler", "local:2",
                 "--follow"]) == 2
    assert "--follow processes the frames in order" in capsys.readouterr().err
