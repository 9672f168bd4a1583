"""Tests of fits/scan/boundary.py helpers that need no refinement."""
import numpy as np
import pytest

from fits.scan.boundary import bulk_points, line_points
from fits.status import FitStatus
from xmodel import orientation


def test_line_points_in_order():
    yy, xx = np.meshgrid(np.arange(5) * 0.25, np.arange(8) * 0.25, indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], 1)
    idx, dist = line_points(pos, (0.5, 0.0), (0.5, 1.75))
    np.testing.assert_array_equal(idx, 2 * 8 + np.arange(8))
    np.testing.assert_allclose(dist, np.arange(8) * 0.25)
    with pytest.raises(ValueError, match="are the same point"):
        line_points(pos, (0.5, 0.0), (0.5, 0.0))


def _rot(angle_deg: float, axis) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return Rotation.from_rotvec(np.radians(angle_deg) * axis).as_matrix()


# --------------------------------------------------------------------------- rotation ramp

CHI = np.arange(180) * 2.0 - 179.0
Q = np.concatenate([np.geomspace(0.06, 0.24, 80), np.geomspace(1.72, 2.3, 24)])


@pytest.fixture(scope="module")
def yellow_line():
    """The yellow domain's scan-fit setup on the coarse polar grid and the parameters its frames
    are made with, ``(setup, p0)``. The line fits share it, and so its compiled programs; a setup
    depends on the support and search settings only, which the fits here leave at the defaults."""
    from fits.scan.settings import FitSettings
    from fits.scan.setup import FitSetup
    from xmodel.config import default_paths, load_config
    from xmodel.parameters import params_from_config

    cfg = load_config(default_paths("yellow"))
    setup = FitSetup.build(cfg, Q, CHI, None, FitSettings())
    p0 = params_from_config(cfg).replace(sl_scale=3000.0, diffuse_scale=45.0, al_scale=20.0, background=0.05)
    return setup, p0


def test_fit_line_follows_a_known_rotation_ramp(yellow_line):
    """Certified-fit style: a yellow domain tilted out of plane by 0 .. 6 deg along a line of 5
    points, plus a point without signal; fit_line's rotation is within 1 deg of the truth."""
    from fits.scan.boundary import fit_line
    from fits.scan.settings import FitSettings
    from xmodel.noise import poisson_counts

    settings = FitSettings.of(batch=1, max_iter=20, n_candidates=2, tol=2e-5)
    setup, p0 = yellow_line
    ramp = np.array([0.0, 0.0, 0.0, 3.0, 6.0])
    frames, truth = [], []
    for i, t in enumerate(ramp):
        p = p0.replace(tilt1=p0.tilt1 + np.radians(t))
        truth.append(np.asarray(p.sl_orientation(), float))
        img = np.full(CHI.size * Q.size, np.nan)
        img[setup.index] = poisson_counts(np.asarray(setup.model(p), float), seed=i)
        frames.append(img)
    empty = np.full(CHI.size * Q.size, np.nan)
    empty[setup.index] = poisson_counts(np.full(setup.index.size, 0.05), seed=9)
    frames.insert(3, empty)
    polar = np.stack(frames).reshape(len(frames), CHI.size, Q.size)
    r = fit_line(polar, setup, settings)
    assert r["status"][3] == 1                                    # no signal, skipped
    got = np.delete(r["rotation_deg"], 3)
    assert np.all(np.isfinite(got)), list(r["message"])
    bulk = truth[0]
    want = np.degrees([float(orientation.misorientation_angle(bulk, R)) for R in truth])
    np.testing.assert_allclose(got, want, atol=1.0, err_msg=str(list(r["message"])))
    mis = [float(np.degrees(orientation.misorientation_angle(R, F)))
           for R, F in zip(truth, np.delete(r["orientation_matrix"], 3, axis=0))]
    assert max(mis) < 0.5


def test_boundary_command_reads_points_as_x_y():
    from xmodel.commands.boundary import _point
    assert _point("7.0,2.5", "--from") == (2.5, 7.0)          # (y, x), the order of the positions
    with pytest.raises(ValueError, match="write it as X,Y in um"):
        _point("7.0", "--to")


# --------------------------------------------------------------------------- bulk reference, scan fit starts

def test_bulk_points_is_the_plateau_not_the_first_points():
    """A line that starts inside the boundary (tilted 6 and 3 deg), crosses a 4-point bulk
    plateau (orientations within 0.3 deg) and ends tilted again: the plateau is the bulk."""
    R0 = _rot(25.0, (0.2, 1.0, -0.4))
    tilts = [6.0, 3.0, 0.0, 0.3, -0.2, 0.1, 4.0, 9.0]
    S = orientation.cubic_symmetry_operators()
    R = np.stack([_rot(t, (1, 0, 0)) @ R0 @ S[k % 24] for k, t in enumerate(tilts)])
    np.testing.assert_array_equal(bulk_points(R, 1.0), [2, 3, 4, 5])
    # two equally long plateaus (a grain boundary): the first along the line is the bulk
    R2 = np.stack([R0, R0, _rot(40.0, (0, 0, 1)) @ R0, _rot(40.0, (0, 0, 1)) @ R0])
    np.testing.assert_array_equal(bulk_points(R2, 1.0), [0, 1])
    assert bulk_points(np.zeros((0, 3, 3)), 1.0).size == 0


def _fits_file(path, n: int, R: np.ndarray) -> None:
    """A minimal ``/entry/fits`` of ``n`` frames (`fits.scan.results.read_fits` layout)."""
    import h5py
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/fits")
        g["orientation_matrix"] = R
        g["status"] = np.zeros(n, np.int32)
        g["lattice_constant"] = np.full(n, 150.0)
        g["message"] = np.array(["ok"] * n, dtype=object).astype("S")
        g.attrs["frames_done"] = n


def test_scan_fit_rows_takes_the_line_points(tmp_path):
    from fits.scan.boundary import scan_fit_rows
    R = np.stack([_rot(float(k), (0, 0, 1)) for k in range(6)])
    _fits_file(tmp_path / "fits.h5", 6, R)
    rows = scan_fit_rows(tmp_path / "fits.h5", np.array([4, 1]), 6)
    np.testing.assert_allclose(rows["orientation_matrix"], R[[4, 1]])
    assert list(rows["message"]) == ["ok", "ok"]
    with pytest.raises(ValueError, match="holds fits of 6 frames but the reduction has 9"):
        scan_fit_rows(tmp_path / "fits.h5", np.array([0]), 9)


def test_fit_line_starts_from_the_scan_fit_and_reports_rotation_to_the_bulk(yellow_line):
    """Certified-fit style, no search (min_significance = inf): a yellow line that starts tilted
    (4 deg), crosses the bulk (3 points) and jumps by 35 deg at its end, where no warm start
    reaches. The scan fit's orientations (0.4 deg off the truth) start every point; the fit
    recovers each orientation within 0.5 deg and the rotation to the bulk plateau within 1 deg."""
    from fits.scan.boundary import fit_line
    from fits.scan.settings import FitSettings
    from xmodel.noise import poisson_counts

    settings = FitSettings.of(batch=1, max_iter=20, n_candidates=2, tol=2e-5, min_significance=np.inf)
    setup, p0 = yellow_line
    tilt1 = np.radians([4.0, 0.0, 0.0, 0.0, 0.0])
    inplane = np.radians([0.0, 0.0, 0.0, 0.0, 35.0])
    frames, truth = [], []
    for i in range(5):
        p = p0.replace(tilt1=p0.tilt1 + tilt1[i], inplane=p0.inplane + inplane[i])
        truth.append(np.asarray(p.sl_orientation(), float))
        img = np.full(CHI.size * Q.size, np.nan)
        img[setup.index] = poisson_counts(np.asarray(setup.model(p), float), seed=20 + i)
        frames.append(img)
    polar = np.stack(frames).reshape(5, CHI.size, Q.size)
    n = 5
    start = np.stack([_rot(0.4, (1, 1, 0)) @ R for R in truth])
    scan_fit = {"orientation_matrix": start, "lattice_constant": np.full(n, float(p0.lattice_constant)),
                "sl_scale": np.full(n, 2000.0), "diffuse_scale": np.full(n, 40.0), "al_scale": np.full(n, 10.0),
                "background": np.full(n, 0.05), "disorder_deg": np.full(n, np.nan),
                "relationship": np.full((n, 3, 3), np.nan)}
    r = fit_line(polar, setup, settings, scan_fit=scan_fit)
    mis = [float(np.degrees(orientation.misorientation_angle(R, F))) for R, F in zip(truth, r["orientation_matrix"])]
    assert max(mis) < 0.5, (mis, list(r["message"]))
    assert r["message"][0].startswith("scan fit start") and r["message"][4].startswith("scan fit start")
    np.testing.assert_array_equal(np.flatnonzero(r["bulk"]), [1, 2, 3])
    want = np.degrees([float(orientation.misorientation_angle(truth[1], R)) for R in truth])
    np.testing.assert_allclose(r["rotation_deg"], want, atol=1.0)
    assert abs(r["rotation_deg"][0] - 4.0) < 1.0
    # propagated standard errors (every point ok): the rotations of the points outside the bulk lie
    # within 4 of them of the truth; the compression averages to 0 over the bulk
    assert np.all(np.isfinite(r["rotation_deg_stderr"])) and np.all(r["lattice_constant_stderr"] > 0)
    assert np.all(r["orientation_stderr_deg"] > 0) and np.all(r["compression_pct_stderr"] > 0)
    for j in (0, 4):
        assert abs(r["rotation_deg"][j] - want[j]) < 4 * r["rotation_deg_stderr"][j], (j, r["rotation_deg_stderr"])
    assert r["compression_pct"][r["bulk"]].mean() == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="scan_fit has 2 rows for 5 frames"):
        fit_line(polar, setup, settings, scan_fit={k: v[:2] for k, v in scan_fit.items()})


def test_write_line_marks_the_bulk(tmp_path):
    import json
    from fits.scan.boundary import write_line
    R = _rot(10.0, (0, 0, 1))
    result = {"rotation_deg": np.array([3.0, 0.1, np.nan]), "lattice_constant": np.array([140.0, 150.0, np.nan]),
              "tilt_deg": np.array([3.0, 0.1, np.nan]), "inplane_deg": np.zeros(3), "disorder_deg": np.full(3, np.nan),
              "bulk": np.array([False, True, False]), "bulk_orientation": R,
              "status": np.array([0, 0, 1]), "message": np.array(["ok", "ok", "no signal"], dtype=object)}
    pos = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    paths = write_line(result, np.arange(3.0), np.arange(3), pos, tmp_path / "line")
    assert all(p.exists() for p in paths)
    doc = json.loads(paths[1].read_text())
    assert [p["bulk"] for p in doc["points"]] == [0, 1, 0]
    np.testing.assert_allclose(doc["bulk_orientation"], R)
    assert doc["points"][2]["rotation_deg"] is None
    assert paths[0].read_text().splitlines()[0].split(",")[-3:] == ["bulk", "status", "message"]
    assert "rotation_deg_stderr" not in doc["units"]          # only the values the result holds


def test_write_line_stores_the_standard_errors_with_units(tmp_path):
    """Values and their propagated standard errors go to the CSV, the JSON and the HDF5 file
    (``/entry/boundary``, each with its units)."""
    import json

    import h5py

    from fits.scan.boundary import LINE_FIELDS, format_line, write_line
    values = [k for k in LINE_FIELDS if k not in ("distance_um", "point", "y_um", "x_um", "bulk", "status")]
    n = 3
    result = {k: np.arange(n, dtype=float) + j for j, k in enumerate(values)}
    result["rotation_deg_stderr"][2] = np.nan
    result.update({"bulk": np.array([False, True, True]), "bulk_orientation": np.eye(3),
                   "status": np.zeros(n, int), "message": np.array(["ok"] * n, dtype=object)})
    paths = write_line(result, np.arange(3.0), np.array([4, 5, 6]), np.zeros((7, 2)), tmp_path / "line")
    doc = json.loads(paths[1].read_text())
    assert doc["points"][1]["compression_pct_stderr"] == result["compression_pct_stderr"][1]
    assert doc["points"][2]["rotation_deg_stderr"] is None and doc["units"]["compression_pct"].startswith("percent")
    assert "rotation_deg_stderr" in paths[0].read_text().splitlines()[0].split(",")
    with h5py.File(paths[2]) as f:
        g = f["entry/boundary"]
        assert g["rotation"].attrs["signal"] == "rotation_deg" and f.attrs["default"] == "entry"
        for k in values:
            v = g[k][g[k].attrs["signal"]] if isinstance(g[k], h5py.Group) else g[k]   # an NXdata plot
            np.testing.assert_array_equal(v[()], result[k])
            assert v.attrs["units"] == LINE_FIELDS[k][0], k
        np.testing.assert_array_equal(g["point"][()], [4, 5, 6])
        np.testing.assert_array_equal(g["distance_um"][()], np.arange(3.0))
    text = format_line(result, np.arange(3.0), np.array([4, 5, 6])).splitlines()
    assert "0.00 +- 1.00" in text[1] and "*" in text[2] and text[3].split()[2] == "2.00"   # no stderr: value only


def test_scan_bulk_orientation_is_the_domains_plateau_over_the_map():
    """A map with a plateau of 6 frames, its boundary ramp, a bigger domain 7 deg away and a
    not-ok frame; the line runs along the ramp into the plateau: the bulk is the plateau, not the
    bigger neighbour domain (cubic orientations of other domains are often this close)."""
    from fits.scan.boundary import scan_bulk_orientation

    R0 = np.asarray(orientation.base_orientation([0, 0, -1], [1, 0, 0]), float)
    rot = lambda ax, deg: np.asarray(orientation.rotation_about_axis(ax, np.radians(deg)), float)  # noqa: E731
    plateau = [rot(0, d) @ R0 for d in (0.0, 0.2, -0.2, 0.1, 0.0, -0.1)]
    ramp = [rot(0, d) @ R0 for d in (4.0, 8.0, 12.0)]
    other = [rot(2, 7.0) @ R0] * 10
    R = np.stack(plateau + ramp + other + [R0])
    status = np.array([FitStatus.OK.code] * (len(R) - 1) + [FitStatus.MIXED.code])
    line = np.stack(ramp[::-1] + plateau[:2])
    bulk = scan_bulk_orientation(R, status, line, 1.0, 0.5)
    assert np.degrees(orientation.misorientation_angle(bulk, R0)) < 0.1
    # a grain-boundary line: its own (first) domain wins over a bigger one further along
    gb = np.stack([plateau[0], plateau[1], other[0]])
    assert np.degrees(orientation.misorientation_angle(scan_bulk_orientation(R, status, gb, 1.0, 0.5), R0)) < 0.1
    assert scan_bulk_orientation(R, np.full(len(R), FitStatus.NO_SIGNAL.code), line, 1.0, 0.5) is None


def test_a_mixed_point_keeps_the_lines_grain(yellow_line):
    """Three yellow points along a line, the third with a second grain 30 deg away about the beam
    whose SL peaks are three times as strong, and a scan fit that took the second grain there:
    the lower deviance alone would jump to it; fit_line keeps the line's own grain and flags the
    point mixed."""
    from fits.scan.boundary import fit_line
    from fits.scan.settings import FitSettings
    from xmodel.noise import poisson_counts
    from xmodel.parameters import FWHM_PER_SIGMA

    settings = FitSettings.of(batch=1, max_iter=20, n_candidates=2, tol=2e-5)
    setup, p0 = yellow_line
    R_own = np.asarray(p0.sl_orientation(), float)
    R2 = orientation.rotation_about_axis(2, np.radians(30.0)) @ R_own
    p2 = p0.replace(base_orientation=R2, inplane=0.0, tilt1=0.0, tilt2=0.0, sl_scale=9000.0, diffuse_scale=0.0,
                    background=0.0)
    mus = [np.asarray(setup.model(p0), float)] * 2 + [np.asarray(setup.model(p0), float)
                                                      + np.asarray(setup.model(p2), float)]
    frames = []
    for i, mu in enumerate(mus):
        img = np.full(CHI.size * Q.size, np.nan)
        img[setup.index] = poisson_counts(mu, seed=20 + i)
        frames.append(img)
    nan3 = np.full((3, 3, 3), np.nan)
    scan_fit = {"orientation_matrix": nan3.copy(), "relationship": nan3.copy(),
                "lattice_constant": np.full(3, float(p0.lattice_constant)), "sl_scale": np.full(3, 9000.0),
                "diffuse_scale": np.full(3, 45.0), "al_scale": np.full(3, 20.0), "background": np.full(3, 0.05),
                "disorder_deg": np.full(3, float(np.degrees(p0.disorder)) * FWHM_PER_SIGMA)}
    scan_fit["orientation_matrix"][2] = np.asarray(p2.sl_orientation(), float)
    scan_fit["relationship"][2] = np.asarray(p0.relationship, float)
    r = fit_line(np.stack(frames).reshape(3, CHI.size, Q.size), setup, settings, scan_fit=scan_fit)
    mis = float(np.degrees(orientation.misorientation_angle(R_own, r["orientation_matrix"][2])))
    assert r["status"][2] == FitStatus.MIXED.code, list(r["message"])
    assert mis < 1.0 and "line's own grain kept" in r["message"][2], (mis, list(r["message"]))
