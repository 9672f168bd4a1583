"""NeXus structure of xmodel's files, validated with silx's NXdata reader."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from silx.io.nxdata import NXdata, get_default, is_valid_nxdata

from xmodel import nexus
from xmodel.cli import main
from xmodel.config import default_paths
from xmodel.positions import derive_grid, grid_from_shape, grid_positions


def _units_are_unit_strings(group: h5py.Group) -> None:
    """Every ``units`` attribute below ``group`` is a short unit string, not a sentence."""
    found = []
    group.visititems(lambda name, obj: found.append((name, obj.attrs["units"])) if "units" in obj.attrs else None)
    for name, units in found:
        assert isinstance(units, str) and units and " " not in units and len(units) <= 16, (name, units)


def _nx_classes(f: h5py.File) -> None:
    """Every group has an NX_class."""
    missing = []
    f.visititems(lambda name, obj: missing.append(name)
                 if isinstance(obj, h5py.Group) and "NX_class" not in obj.attrs else None)
    assert missing == []


def test_nxdata_with_axes_indices_and_default_chain(tmp_path):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        entry = nexus.create_entry(f, title="t")
        grp = nexus.create_nxdata(entry, "polar", "intensity", np.ones((2, 3, 4)), units="counts",
                                  axes=[None, ("chi", np.arange(3.0), "degree", "chi (deg)"),
                                        ("q", np.linspace(0.1, 1, 4), "1/angstrom", "q (1/A)")])
        nexus.set_default(grp)
        nexus.write_process(entry, program="xmodel test", parameters={"a": 1})
    with h5py.File(path, "r") as f:
        assert f.attrs["NX_class"] == "NXroot" and f.attrs["default"] == "entry"
        assert f["entry"].attrs["default"] == "polar"
        assert list(f["entry/polar"].attrs["axes"]) == [".", "chi", "q"]
        assert f["entry/polar"].attrs["q_indices"] == 2
        assert is_valid_nxdata(f["entry/polar"])
        nx = get_default(f)
        assert nx is not None and nx.signal.name == "/entry/polar/intensity" and nx.axes_dataset_names == [None, "chi", "q"]
        proc = f["entry/process"]
        assert proc.attrs["NX_class"] == "NXprocess" and proc["program"][()].decode() == "xmodel test"
        assert proc["version"][()].decode() and proc["date"][()].decode()[:2] == "20"
        assert json.loads(proc["parameters"][()]) == {"a": 1}
        env = json.loads(proc["environment"][()])
        assert env["numpy"] == np.__version__ and env["python"].count(".") == 2
        _nx_classes(f)
        _units_are_unit_strings(f)


def test_environment_names_the_jax_backend_and_devices():
    """The device that computed a result is part of its provenance (GPU and CPU patterns differ at 5e-4)."""
    import jax

    env = nexus.environment()
    assert env["jax"] == jax.__version__ and env["jax_backend"] == jax.default_backend()
    assert env["jax_devices"] and all(d.startswith(f"{env['jax_backend']}:") for d in env["jax_devices"])


def test_nxdata_rejects_mismatched_axes(tmp_path):
    with h5py.File(tmp_path / "b.h5", "w") as f:
        with pytest.raises(ValueError, match="axis 'q' has shape \\(5,\\), dimension 1 of 'y' has length 4"):
            nexus.create_nxdata(f, "d", "y", np.ones((3, 4)), axes=[None, ("q", np.ones(5), None, "q")])
        with pytest.raises(ValueError, match="1 axes for a 2-dimensional signal 'y'"):
            nexus.create_nxdata(f, "d", "y", np.ones((3, 4)), axes=[None])


def test_set_default_keeps_another_writers_default(tmp_path):
    with h5py.File(tmp_path / "c.h5", "w") as f:
        entry = nexus.create_entry(f)
        first = nexus.create_nxdata(entry, "first", "y", np.ones(3))
        nexus.set_default(first)
        grid = nexus.GridLayout(grid_from_shape(6, (2, 3)))            # a raster without positions
        second = nexus.create_scan_map(entry, "second", "z", np.arange(6), grid)
        nexus.set_default(second, overwrite=False)
        assert entry.attrs["default"] == "first"
        assert list(second.attrs["axes"]) == ["row", "column"] and second["z"].shape == (2, 3)
        assert second["z"].dtype.kind == "i" and "units" not in second["column"].attrs
        grid = nexus.GridLayout(derive_grid(grid_positions((2, 3), (0.5, 0.25), "snake")))
        third = nexus.create_scan_map(entry, "third", "z", np.arange(6.0), grid)
        np.testing.assert_allclose(third["x"][()], [0, 0.25, 0.5], atol=1e-12)
        np.testing.assert_array_equal(third["z"][()], [[0, 1, 2], [5, 4, 3]])


def test_simulated_pattern_opens_as_an_image(tmp_path):
    out = tmp_path / "y.h5"
    assert main(["simulate", *map(str, default_paths("yellow")), "--binning", "8", "--out", str(out)]) == 0
    with h5py.File(out, "r") as f:
        nx = get_default(f)
        assert nx is not None and nx.group.name == "/entry/pattern" and nx.is_image
        assert nx.axes_dataset_names == ["row", "column"]
        assert f["entry/pattern/intensity"].attrs["units"] == "counts"
        assert f["entry/geometry/dist"].attrs["units"] == "m" and f["entry/geometry/rot1"].attrs["units"] == "rad"
        proc = f["entry/process"]
        assert proc["program"][()].decode() == "xmodel simulate"
        assert proc["config_1"]["file_name"][()].decode().endswith("yellow.toml")
        assert "lattice_constant" in proc["config_1"]["data"][()].decode()
        assert f.attrs["file_name"] == str(out.resolve())
        _nx_classes(f)
        _units_are_unit_strings(f)


def _tiny_reduction(tmp_path, positions=True, order="raster"):
    """A 2 x 3 scan of 6 small Poisson frames reduced into 10 q and 6 chi bins."""
    from xmodel.dectris import write_scan
    from xmodel.geometry import Geometry
    from xmodel.positions import grid_positions
    from xmodel.reduction import reduce_scan

    shape = (40, 30)
    geo = Geometry(dist=0.05, poni1=20.3 * 75e-6, poni2=15.7 * 75e-6, rot1=0.0, rot2=0.0, rot3=0.0,
                   wavelength=0.898e-10, pixel1=75e-6, pixel2=75e-6, shape=shape, detector_name="")
    frames = np.random.default_rng(1).poisson(20.0, (6, *shape)).astype(np.uint32)
    master = write_scan(tmp_path / "raw", "s", iter(frames), 6, geo, positions_um=None,
                        pixel_mask=np.zeros(shape, bool), frames_per_file=6)
    pos = grid_positions((2, 3), (0.5, 0.25), order) if positions else None
    return reduce_scan(master, tmp_path / "reduced.h5", q_bins=10, chi_bins=6, progress=False, positions_um=pos)


def test_reduction_file_plots_its_radial_profiles_and_polar_stack(tmp_path):
    from xmodel.reduced import open_reduced

    out = _tiny_reduction(tmp_path)
    red = open_reduced(out)                                   # the readers' paths are unchanged
    assert red.polar().shape == (6, 6, 10) and red.scan_shape == (2, 3)
    with h5py.File(out, "r") as f:
        assert f.attrs["NX_class"] == "NXroot" and f["entry"].attrs["NX_class"] == "NXentry"
        proc = f["entry/reduction"]
        assert proc.attrs["NX_class"] == "NXprocess" and proc["program"][()].decode() == "xmodel reduce"
        assert proc["version"][()].decode() and proc["date"][()].decode()[:2] == "20"
        assert Path(proc.attrs["master"]).is_absolute() and Path(proc.attrs["master"]).is_file()
        nx = get_default(f)
        assert nx is not None and nx.group.name == "/entry/radial" and nx.is_image
        assert nx.axes_dataset_names == ["frame", "q"]
        polar = f["entry/polar"]
        assert is_valid_nxdata(polar)
        assert NXdata(polar).axes_dataset_names == ["frame", "chi", "q"]
        assert f["entry/polar/polar"].attrs["units"] == "counts"
        assert f["entry/polar/q"].attrs["units"] == "1/angstrom" and f["entry/polar/chi"].attrs["units"] == "degree"
        np.testing.assert_array_equal(f["entry/polar/polar"][()], f["entry/reduction/polar"][()])  # linked, not copied
        assert isinstance(f["entry/polar"].get("polar", getlink=True), h5py.SoftLink)
        intensity = f["entry/intensity_map"]                 # the scan map of the mean intensity per frame
        assert is_valid_nxdata(intensity) and NXdata(intensity).axes_dataset_names == ["y", "x"]
        np.testing.assert_allclose(intensity["x"][()], [0, 0.25, 0.5], atol=1e-12)
        assert intensity["intensity"].shape == (2, 3) and np.all(np.abs(intensity["intensity"][()] - 20) < 1)
        _nx_classes(f)
        _units_are_unit_strings(f)


@pytest.mark.parametrize("same_file", [False, True])
def test_fits_file_opens_as_a_lattice_constant_map_in_micrometres(tmp_path, same_file):
    """Synthetic per-frame results written through the schema functions of fits.scan.results."""
    from fits.scan import results as store
    from fits.scan.settings import FitSettings
    from fits.status import FitStatus
    from xmodel.config import load_config
    from xmodel.reduced import open_reduced

    red = _tiny_reduction(tmp_path)
    out = red if same_file else tmp_path / "fits.h5"
    store.link_reduction(out, red)
    assert store.prepare(out, 6, red, load_config(default_paths("red")), FitSettings()) == 0
    rows = store.empty_results(6)
    rows["lattice_constant"][:] = np.arange(6) + 100.0
    rows["tilt_deg"][:] = 1.0
    rows["status"][:] = FitStatus.OK.code
    store.write_batch(out, 0, 6, rows)
    store.write_maps(out, open_reduced(red))
    r = store.read_fits(out)                                  # the per-frame arrays stay where they are
    np.testing.assert_array_equal(r["lattice_constant"], np.arange(6) + 100.0)
    assert "program" not in r and "maps" not in r
    with h5py.File(out, "r") as f:
        proc = f["entry/fits"]
        assert proc.attrs["NX_class"] == "NXprocess" and proc["program"][()].decode() == "xmodel fit"
        assert proc["version"][()].decode() and proc["date"][()].decode()[:2] == "20"
        assert json.loads(proc["parameters"][()])["max_iter"] == FitSettings().to_flat()["max_iter"]
        assert proc["config_0"].attrs["NX_class"] == "NXnote"
        assert f["entry/fits/maps"].attrs["NX_class"] == "NXcollection"
        nx = get_default(f)
        assert nx is not None and nx.group.name == "/entry/fits/maps/lattice_constant" and nx.is_image
        assert nx.axes_dataset_names == ["y", "x"]
        np.testing.assert_allclose(f["entry/fits/maps/lattice_constant/x"][()], [0, 0.25, 0.5], atol=1e-12)
        np.testing.assert_allclose(f["entry/fits/maps/lattice_constant/y"][()], [0, 0.5], atol=1e-12)
        assert f["entry/fits/maps/lattice_constant/y"].attrs["units"] == "um"
        assert f["entry/fits/maps/lattice_constant/lattice_constant"].attrs["units"] == "angstrom"
        np.testing.assert_array_equal(nx.signal[()], [[100, 101, 102], [103, 104, 105]])
        for key in ("tilt_deg", "inplane_deg", "status"):
            assert is_valid_nxdata(f[f"entry/fits/maps/{key}"]) and f[f"entry/fits/maps/{key}"][key].shape == (2, 3)
        assert "units" not in f["entry/fits/status"].attrs
        _nx_classes(f)
        _units_are_unit_strings(f)


def test_fits_without_a_scan_grid_plot_per_frame(tmp_path):
    from fits.scan import results as store
    from fits.scan.settings import FitSettings
    from xmodel.config import load_config
    from xmodel.positions import grid_positions
    from xmodel.reduced import open_reduced, store_scan_metadata

    red = _tiny_reduction(tmp_path, positions=False)
    store.prepare(red, 6, red, load_config(default_paths("red")), FitSettings())
    store.write_maps(red, open_reduced(red))
    with h5py.File(red, "r") as f:
        nx = get_default(f)
        assert nx is not None and nx.group.name == "/entry/fits/maps/lattice_constant"
        assert nx.axes_dataset_names == ["frame"] and nx.signal.shape == (6,)
        assert "intensity_map" not in f["entry"]
        _nx_classes(f)
    # positions given later (xmodel fit --positions) bring the map of the reduction
    store_scan_metadata(red, positions_um=grid_positions((2, 3), (0.5, 0.25), "snake"), source="test")
    with h5py.File(red, "r") as f:
        assert NXdata(f["entry/intensity_map"]).axes_dataset_names == ["y", "x"]
        np.testing.assert_allclose(f["entry/intensity_map/y"][()], [0, 0.5], atol=1e-12)


# ------------------------------------------------------------------ every other file type xmodel writes


def _plottable(path, default: str) -> None:
    """The NeXus rules of every xmodel file: NXroot, a ``@default`` chain to a valid NXdata named
    ``default``, every NXdata group valid, an NX_class on every group, unit strings."""
    with h5py.File(path, "r") as f:
        assert f.attrs["NX_class"] == "NXroot"
        nx = get_default(f)
        assert nx is not None and nx.group.name == default and is_valid_nxdata(nx.group)
        nxdata = []
        f.visititems(lambda name, obj: nxdata.append(name)
                     if isinstance(obj, h5py.Group) and obj.attrs.get("NX_class") == "NXdata" else None)
        assert nxdata and all(is_valid_nxdata(f[name]) for name in nxdata), nxdata
        _nx_classes(f)
        _units_are_unit_strings(f)


def test_classification_map_places_snake_frames_in_micrometres(tmp_path):
    from fits.analyses.classification_file import LABEL, write_classification
    from xmodel.reduced import open_reduced

    red = _tiny_reduction(tmp_path, order="snake")           # frames 3, 4, 5 run backwards along x
    label = np.array([0, 1, -1, -2, 0, 1])
    conf = np.linspace(0, 1, 6)
    write_classification(red, open_reduced(red), ["red", "blue"], ["#f00", "#00f"],
                         {"label": label, "saxs_label": label, "waxs_label": label},
                         {"confidence": conf, "saxs_confidence": conf, "waxs_confidence": conf},
                         parameters={"templates": "five"}, method="test")
    _plottable(red, "/entry/classification/map")
    with h5py.File(red, "r") as f:
        g = f["entry/classification"]
        assert g.attrs["NX_class"] == "NXprocess" and g["program"][()].decode() == "xmodel classify"
        np.testing.assert_array_equal(f[LABEL][()], label)                  # per-frame labels stay
        m = NXdata(g["map"])
        assert m.is_image and m.axes_dataset_names == ["y", "x"]
        np.testing.assert_array_equal(m.signal[()], [[0, 1, -1], [1, 0, -2]])
        assert m.signal.dtype.kind == "i"
        np.testing.assert_allclose(g["map/x"][()], [0, 0.25, 0.5], atol=1e-12)
        assert g["map/x"].attrs["units"] == "um" and "confidence" in m.auxiliary_signals_names
    with pytest.raises(ValueError, match=r"classification datasets \['colour'\] are not in the schema"):
        write_classification(red, open_reduced(red), [], [], {"label": label, "colour": label}, {},
                             parameters={}, method="")


def test_qmap_group_opens_as_a_q_map_with_its_line(tmp_path):
    from fits.analyses.qmap import LineProfile
    from fits.analyses.qmap_file import FIELDS, write_qmap
    from xmodel.reduced import open_reduced

    red = _tiny_reduction(tmp_path)
    values = {k: np.full(6, 1.0) for k in FIELDS}
    values["center"] = np.linspace(0.08, 0.085, 6)
    values["status"] = np.array([0, 0, 7, 0, 10, 0], np.int8)
    line = LineProfile(np.array([0.0, 0.25]), np.array([0, 1]), np.array([0.0, 0.25]), np.zeros(2),
                       {"q": values["center"][:2], "q_err": np.full(2, 1e-4), "d_spacing": 2 * np.pi / values["center"][:2],
                        "lattice_constant": np.full(2, 150.0)})
    write_qmap(red, "200", values, scan=open_reduced(red), attrs={"family": "200"}, parameters={"a_nominal": 150.0},
               line=line, line_ends=((0.0, 0.0), (0.25, 0.0)))
    _plottable(red, "/entry/qmap/200/maps/q")
    with h5py.File(red, "r") as f:
        g = f["entry/qmap/200"]
        assert f["entry/qmap"].attrs["NX_class"] == "NXcollection" and g.attrs["NX_class"] == "NXprocess"
        assert g["program"][()].decode() == "xmodel qmap"
        q = NXdata(g["maps/q"])
        assert q.axes_dataset_names == ["y", "x"] and q.signal.attrs["units"] == "1/angstrom"
        np.testing.assert_allclose(q.signal[()], values["center"].reshape(2, 3))
        np.testing.assert_array_equal(g["maps/status/status"][()], [[0, 0, 7], [0, 10, 0]])
        ln = NXdata(g["line"])
        assert ln.axes_dataset_names == ["distance_um"] and ln.errors is not None
        assert "status_codes" in g["status"].attrs and g["center"].shape == (6,)


def test_qmap_of_radial_profiles_without_a_grid_plots_per_frame(tmp_path):
    from fits.analyses.qmap_file import FIELDS, PER_FRAME, write_qmap

    path = tmp_path / "radial.h5"
    with h5py.File(path, "w") as f:
        f.create_group("entry/reduction")["radial"] = np.ones((4, 5))
        f["entry"].attrs["NX_class"], f["entry/reduction"].attrs["NX_class"] = "NXentry", "NXprocess"
    write_qmap(path, "311", {k: np.zeros(4) for k in FIELDS}, scan=PER_FRAME, attrs={}, parameters={})
    _plottable(path, "/entry/qmap/311/maps/q")
    with h5py.File(path, "r") as f:
        assert NXdata(f["entry/qmap/311/maps/q"]).axes_dataset_names == ["frame"]


def test_boundary_line_file(tmp_path):
    from fits.scan.boundary import write_line

    result = {"rotation_deg": np.array([3.0, 0.1, np.nan]), "lattice_constant": np.array([140.0, 150.0, np.nan]),
              "tilt_deg": np.array([3.0, 0.1, np.nan]), "inplane_deg": np.zeros(3), "disorder_deg": np.full(3, 9.0),
              "bulk": np.array([False, True, False]), "bulk_orientation": np.eye(3),
              "status": np.array([0, 0, 1]), "message": np.array(["ok", "ok", "no signal"], dtype=object)}
    pos = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    paths = write_line(result, np.arange(3.0), np.arange(3), pos, tmp_path / "line",
                       parameters={"from_xy_um": [0, 0]}, configs=default_paths("red"))
    h5 = tmp_path / "line.h5"
    assert h5 in paths
    _plottable(h5, "/entry/boundary/rotation")
    with h5py.File(h5, "r") as f:
        g = f["entry/boundary"]
        assert g["program"][()].decode() == "xmodel boundary" and g["config_1"].attrs["NX_class"] == "NXnote"
        assert NXdata(g["rotation"]).axes_dataset_names == ["distance_um"]
        assert g["rotation/distance_um"].attrs["units"] == "um"
        np.testing.assert_array_equal(g["lattice_constant/lattice_constant"][()][:2], [140.0, 150.0])
        assert g["message"][2].decode() == "no signal"


def test_ccf_file_of_a_reduced_scan(tmp_path, capsys):
    red = _tiny_reduction(tmp_path)
    out = tmp_path / "ccf.h5"
    assert main(["ccf", str(red), "--q1", "0.1", "--q2", "0.2", "--dq", "0.03", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["out"] == str(out)
    _plottable(out, "/entry/ccf/ccf")
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["entry/ccf/ccf/ccf"][()], doc["ccf"])
        assert f["entry/ccf/ccf/delta_deg"].attrs["units"] == "degree"
        assert json.loads(f["entry/ccf/parameters"][()])["q1"] == 0.1


def test_study_file(tmp_path):
    from fits.study.fisher import analyse_fisher
    from fits.study.montecarlo import MonteCarloResult
    from fits.study.result import StudyResult

    names = ("lattice_constant", "tilt1_deg")
    fisher = analyse_fisher(np.array([[4.0, 1.0], [1.0, 2.0]]), names)
    mc = MonteCarloResult("truth", names, np.array([[150.1, 0.2], [149.9, -0.1]]), np.array([150.0, 0.0]),
                          np.array([True, True]), 3)
    res = StudyResult("green", "polar", 0.3, 100, 1e6, names, ("A", "deg"), np.array([150.0, 0.0]), fisher,
                      {"truth": mc})
    path = res.write(tmp_path / "study.h5")
    _plottable(path, "/entry/study/correlation_image")
    with h5py.File(path, "r") as f:
        assert f["entry/study"].attrs["NX_class"] == "NXprocess"
        assert list(f["entry/study"].attrs["parameter_units"]) == ["A", "deg"]
        assert f["entry/study/monte_carlo/truth/values"].shape == (2, 2)


def test_truth_and_detector_files_of_a_twin(tmp_path):
    from xmodel.synth import write_truth
    from xmodel.twin import load_twin, point_truth

    sample = load_twin(Path(__file__).resolve().parents[2] / "configs" / "demo.toml", ["scan.shape=[3,4]"])
    path = write_truth(tmp_path / "truth.h5", sample, point_truth(sample))
    _plottable(path, "/entry/label_map")
    with h5py.File(path, "r") as f:
        m = NXdata(f["entry/label_map"])
        assert m.axes_dataset_names == ["y", "x"] and m.signal.shape == (3, 4)
        np.testing.assert_array_equal(m.signal[()].reshape(-1), f["truth/label"][()])
        assert "units" not in f["truth/label"].attrs and f["truth/lattice_constant"].attrs["units"] == "angstrom"
    # the Eiger-layout master and data files of the scan (written by xmodel.dectris.write_scan)
    _tiny_reduction(tmp_path)
    for name in ("s_master.h5", "s_data_000001.h5"):
        _plottable(tmp_path / "raw" / name, "/entry/data")
    with h5py.File(tmp_path / "raw" / "s_master.h5", "r") as f:
        assert get_default(f).signal.shape == (6, 40, 30)           # through the external link
