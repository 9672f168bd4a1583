"""Tests of xmodel.config: shipped TOML files, merging, --set parsing, and every user-facing error."""
import importlib.util
import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from xmodel.config import (
    DOMAINS, EXPERIMENT_TOML, Config, ConfigError, default_paths, load_config, parse_override)

# Table S1 <a> (A), Table S2 dPhi and radial FWHM (deg), Figure S4 beam directions, Figure 5 configurations.
PAPER = {
    "red": (150.5, 12.9, 2.5, (0, 0, -1), "conf1"),
    "purple": (149.9, 17.3, 2.5, (-1, 1, 0), "conf1"),
    "yellow": (150.2, 16.7, 2.5, (0, 0, -1), "conf2"),
    "green": (148.9, 16.5, 2.6, (-1, 1, 0), "conf2"),
    "orange": (151.3, 12.9, 2.4, (3, 0, -1), "conf2"),
}
EXPERIMENT = """
[beam]
energy_kev = 13.8
[detector]
distance_m = 0.41
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    return write(tmp_path / "exp.toml", EXPERIMENT)


# --- shipped configs -------------------------------------------------------------------------

@pytest.mark.parametrize("domain", DOMAINS)
def test_shipped_domain_loads_with_paper_values(domain: str) -> None:
    config = load_config(default_paths(domain))
    a, dphi, fwhm_rad, beam, conf = PAPER[domain]
    assert isinstance(config, Config) and config.name == domain
    assert config.superlattice.lattice_constant == a
    assert config.superlattice.beam_direction == tuple(float(v) for v in beam)
    assert config.atomic_lattice.configuration == conf
    assert config.atomic_lattice.disorder_fwhm_deg == dphi
    assert config.atomic_lattice.radial_width == pytest.approx(
        2.12 * math.radians(fwhm_rad) / 2.3548, abs=1e-4)
    assert config.beam.energy_kev == 13.8 and config.detector.distance_m == 0.41
    assert config.sources == tuple(str(p) for p in default_paths(domain))


def test_red_domain_is_tilted_by_5_to_10_degrees() -> None:
    sl = load_config(default_paths("red")).superlattice
    assert 5 <= math.hypot(sl.tilt1_deg, sl.tilt2_deg) <= 10


def test_shipped_files_keep_experiment_and_sample_tables_apart() -> None:
    experiment = tomllib.loads(EXPERIMENT_TOML.read_text())
    assert set(experiment) == {"beam", "detector", "mask", "model"}
    for domain in DOMAINS:
        text = default_paths(domain)[1].read_text()
        assert text.startswith("# ") and "Table S1" in text and "Table S2" in text
        assert set(tomllib.loads(text)) <= {
            "name", "superlattice", "nanocrystal", "atomic_lattice", "background"}


def test_default_paths_unknown_domain() -> None:
    with pytest.raises(ConfigError, match=r"Unknown domain 'yelow'.*'red', 'purple'.*Did you mean 'yellow'"):
        default_paths("yelow")


def _flat_q_chi(step: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|q| (1/A) and pyFAI chi (deg) on an untilted Eiger 4M grid every `step` pixels, and the border."""
    det = load_config(default_paths("red")).detector
    rows, cols = np.arange(0, 2167, step), np.arange(0, 2070, step)
    t1 = (rows[:, None] - det.beam_center_px[0]) * 75e-6 + 0 * cols
    t2 = (cols[None, :] - det.beam_center_px[1]) * 75e-6 + 0 * t1
    two_theta = np.arctan2(np.hypot(t1, t2), det.distance_m)
    q = 4 * np.pi * np.sin(two_theta / 2) / (12.398419843320026 / 13.8)
    border = np.zeros(q.shape, bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    return q, np.degrees(np.arctan2(t1, t2)), border


def _check_rings(q: np.ndarray, chi: np.ndarray, border: np.ndarray) -> None:
    assert q[border].min() > 0.25                  # the SAXS rings up to 0.25 1/A are whole
    ring = np.abs(q - 2.12) < 0.01
    assert 85 <= np.ptp(chi[ring]) <= 115          # the 200_AL ring covers about 90 deg


def test_experiment_geometry_holds_saxs_and_quarter_of_200_ring() -> None:
    _check_rings(*_flat_q_chi())


@pytest.mark.skipif(importlib.util.find_spec("xmodel.geometry") is None,
                    reason="xmodel.geometry not written yet")
def test_experiment_geometry_with_xmodel_geometry() -> None:
    from xmodel.geometry import Geometry
    det = load_config(default_paths("red")).detector
    geometry = Geometry.from_beam_center(det.distance_m, det.beam_center_px, 13.8, detector="Eiger4M")
    q, chi = np.asarray(geometry.q()), np.asarray(geometry.chi())
    border = np.zeros(q.shape, bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    _check_rings(q, chi, border)


# --- merging and overrides -------------------------------------------------------------------

def test_later_files_override_key_by_key_then_set(tmp_path: Path) -> None:
    first = write(tmp_path / "exp.toml", EXPERIMENT + "[superlattice]\nlattice_constant = 140\ntilt1_deg = 3\n")
    second = write(tmp_path / "sample.toml", "[superlattice]\nlattice_constant = 150.5\n")
    config = load_config([first, second])
    assert config.superlattice.lattice_constant == 150.5      # sample overrides experiment
    assert config.superlattice.tilt1_deg == 3.0               # untouched keys survive the merge
    assert config.detector.distance_m == 0.41 and config.mask.module_gaps is True  # defaults
    assert config.name == "sample"                            # default name: the last file's stem
    config = load_config([first, second], ["superlattice.lattice_constant=160", "name=test"])
    assert config.superlattice.lattice_constant == 160.0 and config.name == "test"
    assert config.sources[-1] == "--set name=test"


@pytest.mark.parametrize("text, expected", [
    ("superlattice.beam_direction=[1,1,2]", ("superlattice", "beam_direction", [1, 1, 2])),
    ("superlattice.lattice_constant=140", ("superlattice", "lattice_constant", 140)),
    ("superlattice.lattice_constant = 1.5e2", ("superlattice", "lattice_constant", 150.0)),
    ('atomic_lattice.configuration="conf1"', ("atomic_lattice", "configuration", "conf1")),
    ("atomic_lattice.configuration=conf1", ("atomic_lattice", "configuration", "conf1")),
    ("mask.module_gaps=false", ("mask", "module_gaps", False)),
    ("mask.files=[\"a.npy\"]", ("mask", "files", ["a.npy"])),
    ("detector.poni_file=../geom/p10.poni", ("detector", "poni_file", "../geom/p10.poni")),
    ("detector.poni_file=", ("detector", "poni_file", "")),
    ("name=red", ("", "name", "red")),
])
def test_parse_override(text: str, expected: tuple) -> None:
    assert parse_override(text) == expected


@pytest.mark.parametrize("text, match", [
    ("superlattice.lattice_constant", r"--set 'superlattice.lattice_constant' has no '='.*table.key=value"),
    ("a.b.c=1", r"key 'a.b.c' must be table.key with one dot"),
    ("superlattice.beam_direction=[1,1", r"value '\[1,1' is not a TOML value"),
])
def test_parse_override_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_override(text)


def test_overrides_are_validated(experiment: Path) -> None:
    config = load_config([experiment], ["superlattice.beam_direction=[1,1,2]",
                                        "atomic_lattice.configuration=conf2", "mask.module_gaps=false"])
    assert config.superlattice.beam_direction == (1.0, 1.0, 2.0)
    assert config.atomic_lattice.configuration == "conf2" and config.mask.module_gaps is False


def test_to_dict_is_json_and_round_trips(tmp_path: Path) -> None:
    config = load_config(default_paths("orange"), ["detector.binning=2"])
    data = config.to_dict()
    json.dumps(data)
    lines = [f"name = {json.dumps(data['name'])}"]
    for table, values in data.items():
        if table != "name":
            lines += [f"[{table}]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    again = load_config([write(tmp_path / "round.toml", "\n".join(lines))])
    assert again.to_dict() == data
    assert data["superlattice"]["beam_direction"] == [3.0, 0.0, -1.0] and data["detector"]["poni_file"] == ""


# --- paths -----------------------------------------------------------------------------------

def test_paths_resolve_relative_to_the_toml_that_names_them(tmp_path: Path) -> None:
    poni = write(tmp_path / "geom" / "p10.poni", "")
    mask = write(tmp_path / "geom" / "bad.npy", "")
    exp = write(tmp_path / "geom" / "exp.toml",
                '[beam]\n[detector]\nponi_file = "p10.poni"\n[mask]\nfiles = ["bad.npy"]\n')
    config = load_config([exp])
    assert config.detector.poni_file == poni.resolve() and config.mask.files == (mask.resolve(),)
    assert config.detector.distance_m is None and config.detector.beam_center_px is None
    assert "distance_m" not in config.to_dict()["detector"]


def test_poni_file_together_with_distance(tmp_path: Path) -> None:
    write(tmp_path / "p10.poni", "")
    exp = write(tmp_path / "exp.toml", EXPERIMENT)
    with pytest.raises(ConfigError, match=r"detector.poni_file \(from --set .*\) supplies the geometry.*"
                                          r"detector.distance_m \(from .*exp.toml\)"):
        load_config([exp], [f"detector.poni_file={tmp_path / 'p10.poni'}"])


def test_missing_poni_file(tmp_path: Path) -> None:
    exp = write(tmp_path / "exp.toml", '[beam]\n[detector]\nponi_file = "nope.poni"\n')
    with pytest.raises(ConfigError, match=r"detector.poni_file = \"nope.poni\" in .*exp.toml resolves to .*nope.poni"
                                          r"', which does not exist"):
        load_config([exp])


def test_mask_file_type(tmp_path: Path) -> None:
    write(tmp_path / "mask.txt", "")
    exp = write(tmp_path / "exp.toml", EXPERIMENT + '[mask]\nfiles = ["mask.txt"]\n')
    with pytest.raises(ConfigError, match=r"mask.files names .*mask.txt' in .*exp.toml, which is not a mask file type"):
        load_config([exp])


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sample, match", [
    ("[superlatice]\nlattice_constant = 150\n",
     r"Unknown table \[superlatice\] in .*sample.toml. Did you mean 'superlattice'\?"),
    ("[superlattice]\nlattice_constnt = 150\n",
     r"Unknown key superlattice.lattice_constnt in .*sample.toml. Did you mean 'superlattice.lattice_constant'\?"),
    ("lattice_constant = 150\n",
     r"Unknown top-level key 'lattice_constant' in .*sample.toml; it belongs in a table: superlattice.lattice_constant"),
    ("superlattice = 150\n", r"superlattice = 150 \(an integer\) in .*sample.toml: expected a table \[superlattice\]"),
    ('[superlattice]\nlattice_constant = "150"\n',
     r'superlattice.lattice_constant = "150" \(a string\) in .*sample.toml: expected a finite number'),
    ("[superlattice]\nlattice_constant = true\n",
     r"superlattice.lattice_constant = true \(a boolean\) in .*sample.toml: expected a finite number"),
    ("[superlattice]\nlattice_constant = -150.0\n",
     r"superlattice.lattice_constant = -150.0 \(a float\) in .*sample.toml: expected .* > 0 \(A\)"),
    ("[superlattice]\nlattice_constant = nan\n", r"superlattice.lattice_constant = nan .*expected a finite number"),
    ("[superlattice]\nbeam_direction = [0, 1]\n",
     r"superlattice.beam_direction = \[0, 1\] \(a list of 2 items\) in .*sample.toml: expected a list of 3"),
    ("[superlattice]\nbeam_direction = [0, 0, 0]\n",
     r"superlattice.beam_direction = \[0, 0, 0\] .* in .*sample.toml: expected .*not all zero"),
    ("[superlattice]\nbeam_direction = [1, 0, 0]\n",
     r"superlattice.inplane_reference = \[1.0, 0.0, 0.0\] \(from the default\) is parallel to "
     r"superlattice.beam_direction .*sample.toml"),
    ("[superlattice]\nradial_width = -0.001\n",
     r"superlattice.radial_width = -0.001 \(a float\) in .*sample.toml: expected .* > 0 \(1/A\)"),
    ("[atomic_lattice]\nradial_width = 0\n", r"atomic_lattice.radial_width = 0 .*sample.toml: expected .* > 0"),
    ("[nanocrystal]\nradius_sigma = -1\n", r"nanocrystal.radius_sigma = -1 .*sample.toml: expected .* >= 0 \(A\)"),
    ("[beam]\npolarization_factor = 1.5\n", r"beam.polarization_factor = 1.5 .*expected .* in \[-1, 1\]"),
    ("[detector]\nbinning = 2.0\n", r"detector.binning = 2.0 \(a float\) in .*sample.toml: expected an integer >= 1"),
    ('[detector]\nname = "Eiger 4M"\n',
     r"detector.name = \"Eiger 4M\" .*expected one of \['Eiger4M'\].*Did you mean 'Eiger4M'"),
    ("[mask]\nmodule_gaps = 1\n", r"mask.module_gaps = 1 \(an integer\) in .*sample.toml: expected true or false"),
    ('[atomic_lattice]\nconfiguration = "conf3"\n',
     r"atomic_lattice.configuration = \"conf3\" .*expected one of \['conf1', 'conf2', 'custom'\]"),
    ('[atomic_lattice]\nconfiguration = "custom"\n',
     r"atomic_lattice.configuration = \"custom\" \(in .*sample.toml\) needs atomic_lattice.custom_pairs"),
    ("[atomic_lattice]\ncustom_pairs = [[[1, 1, 0], [1, 0, 0]], [[0, 0, 1], [0, 0, 1]]]\n",
     r"atomic_lattice.custom_pairs is given \(in .*sample.toml\) but atomic_lattice.configuration = \"conf1\""),
    ('[atomic_lattice]\nconfiguration = "custom"\ncustom_pairs = [[[1, 1, 0], [1, 0, 0]]]\n',
     r"atomic_lattice.custom_pairs = .* in .*sample.toml: expected two \[sl_direction, al_direction\] pairs"),
    ('[atomic_lattice]\nconfiguration = "custom"\ncustom_pairs = [[[1, 1, 0], [1, 0, 0]], [[1, 1, 1], [0, 0, 1]]]\n',
     r"atomic_lattice.custom_pairs in .*sample.toml: the SL directions are 35.26 deg apart but the AL "
     r"directions 90.00 deg"),
    ("name = 3\n", r"name = 3 \(an integer\) in .*sample.toml: expected a string"),
])
def test_errors_name_key_and_file(experiment: Path, tmp_path: Path, sample: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config([experiment, write(tmp_path / "sample.toml", sample)])


def test_custom_configuration_loads(experiment: Path) -> None:
    pairs = "[[[1,1,0],[1,0,0]],[[0,0,1],[0,1,1]]]"
    config = load_config([experiment], ["atomic_lattice.configuration=custom", f"atomic_lattice.custom_pairs={pairs}"])
    assert config.atomic_lattice.custom_pairs == (((1.0, 1.0, 0.0), (1.0, 0.0, 0.0)), ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0)))


def test_error_from_set_names_the_override(experiment: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "superlattice.lattice_constant = \"abc\" (a string) in --set superlattice.lattice_constant=abc")):
        load_config([experiment], ["superlattice.lattice_constant=abc"])
    with pytest.raises(ConfigError, match=r"Unknown key beam.energy in --set beam.energy=13. Did you mean 'beam.energy_kev'"):
        load_config([experiment], ["beam.energy=13"])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Config file '.*nothere.toml' does not exist.*default_paths"):
        load_config([tmp_path / "nothere.toml"])


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", "[beam]\nenergy_kev = 13.8\nexposure_s = = 0.3\n")
    with pytest.raises(ConfigError, match=r"Invalid TOML in .*bad.toml: .*line 3"):
        load_config([bad])


def test_experiment_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"No experiment configuration: no table \[beam\], \[detector\] in "
                                          r"\[.*red.toml'\]. Pass the experiment TOML first"):
        load_config([default_paths("red")[1]])


def test_shipped_configs_by_name_and_through_importlib_resources():
    """An installed user names a shipped config without its folder: `xmodel peaks p10_eiger4m yellow`."""
    from xmodel.config import CONFIG_DIR, shipped_config

    assert shipped_config("p10_eiger4m") == CONFIG_DIR / "experiment" / "p10_eiger4m.toml"
    assert shipped_config("yellow") == CONFIG_DIR / "domains" / "yellow.toml"
    assert shipped_config("configs/twin.toml").resolve() == (CONFIG_DIR / "twin.toml").resolve()
    cfg = load_config(["p10_eiger4m", "yellow"])
    assert cfg == load_config(default_paths("yellow"))
    with pytest.raises(ConfigError, match=r"'yelow' does not exist and is not a shipped config.*Did you mean 'yellow'"):
        shipped_config("yelow")
