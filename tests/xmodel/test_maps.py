"""Scan maps and per-domain averages of reduced scans (xmodel.maps)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from xmodel import maps


@pytest.fixture
def results(tmp_path):
    """A 2 x 3 scan: frame i has intensity i + 1 everywhere, one NaN column of bins."""
    q = np.geomspace(0.05, 2.5, 60)
    chi = np.arange(-179.5, 180, 10.0)
    polar = np.stack([np.full((chi.size, q.size), i + 1.0) for i in range(6)])
    polar[:, :, 5] = np.nan
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"], g["radial"], g["q"], g["chi"] = polar, polar[:, 0, :], q, chi
        g["scan_shape"] = np.array([2, 3])
    return path, q


def test_ring_intensity_is_the_band_mean_per_frame(results):
    path, q = results
    np.testing.assert_allclose(maps.ring_intensity(path, 2.12, 0.1), np.arange(1, 7))
    assert maps.scan_grid(path) == (2, 3)
    with pytest.raises(ValueError, match="no q bin within"):
        maps.ring_intensity(path, 5.0, 0.01)


def test_average_frames_and_figures(results, tmp_path):
    path, q = results
    polar, radial = maps.average_frames(path, [0, 2, 4])
    np.testing.assert_allclose(polar[:, 0], 3.0)
    assert np.all(np.isnan(polar[:, 5]))                     # a bin without pixels stays NaN
    np.testing.assert_allclose(radial[0], 3.0)
    maps.plot_polar_and_radial(polar, radial, q, np.arange(-179.5, 180, 10.0), tmp_path / "p.png", title="t")
    assert (tmp_path / "p.png").stat().st_size > 5000
    maps.plot_map(np.arange(6.0), (2, 3), tmp_path / "m.png", title="m", step_um=0.25)
    assert (tmp_path / "m.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="no frames to average"):
        maps.average_frames(path, [])


def test_missing_reduction_is_a_clear_error(tmp_path):
    path = tmp_path / "x.h5"
    h5py.File(path, "w").close()
    with pytest.raises(ValueError, match=r"x\.h5 is not a reduced scan \(no /entry/reduction/polar\): run `xmodel reduce"):
        maps.ring_intensity(path, 0.083)


def test_maps_are_flux_normalised_and_put_snake_rows_back(results):
    """A frame at half flux maps as the others; a snake scan's reversed row goes back in place."""
    from xmodel.positions import grid_positions

    path, q = results
    with h5py.File(path, "a") as f:
        g = f["entry/reduction"]
        g["polar"][1] = g["polar"][1] / 2.0        # frame 1 measured at half flux: half the counts
        g["monitor"] = np.array([10.0, 5.0, 10.0, 10.0, 10.0, 10.0])
        g["positions"] = grid_positions((2, 3), 0.25, "snake")
        del g["scan_shape"]
    values = maps.ring_intensity(path, 2.12, 0.1)
    np.testing.assert_allclose(values, [1, 2, 3, 4, 5, 6])     # scaled to the median monitor
    np.testing.assert_allclose(maps.ring_intensity(path, 2.12, 0.1, normalised=False)[1], 1.0)
    np.testing.assert_allclose(maps.scan_image(path, values), [[1, 2, 3], [6, 5, 4]])
    polar, _ = maps.average_frames(path, [1])
    np.testing.assert_allclose(polar[:, 0], 2.0)


def test_no_positions_said_once(tmp_path, caplog):
    path = tmp_path / "n.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("entry/reduction")
        g["polar"], g["radial"], g["q"], g["chi"] = np.ones((5, 2, 3)), np.ones((5, 3)), np.arange(3.0), [0.0, 1.0]
    with caplog.at_level("WARNING"):
        with pytest.raises(ValueError, match="5 frames and no scan positions or shape"):
            maps.scan_grid(path)
        with pytest.raises(ValueError, match="5 frames and no scan positions or shape"):
            maps.scan_grid(path)
    assert caplog.text.count("no scan positions: maps need --scan-shape or --positions") == 1
