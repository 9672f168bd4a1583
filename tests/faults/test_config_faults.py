"""Fault injection, configuration stage: every bad TOML file, ``--set`` override and experiment
setting is a `ConfigError` that names the file or override, the key and what is expected.

Each row of the tables below is one distinct fault; the message is pinned with ``match=``.
Only the stage's contract is tested here (loading, merging, validation, building the mask and
the binning); tests/xmodel/test_config.py holds the behaviour of the valid configs.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import numpy as np
import pytest

from xmodel.config import ConfigError, default_paths, load_config, parse_override
from xmodel.experiment import Experiment, checked_binning

EXPERIMENT = "[beam]\nenergy_kev = 13.8\n[detector]\ndistance_m = 0.41\n"


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    return write(tmp_path / "exp.toml", EXPERIMENT)


# --- values in a TOML file: type, range, shape, spelling --------------------------------------

FILE_FAULTS = [
    # wrong types
    ("[beam]\nenergy_kev = \"13.8 keV\"\n",
     r'beam.energy_kev = "13.8 keV" \(a string\) in .*sample.toml: expected a finite number'),
    ("[beam]\nenergy_kev = [13.8]\n",
     r"beam.energy_kev = \[13.8\] \(a list of 1 item\) in .*sample.toml: expected a finite"),
    ("[beam]\nenergy_kev = {value = 13.8}\n", r"beam.energy_kev = \{value = 13.8\} \(a table\) in .*sample.toml"),
    ("[detector]\nbinning = true\n", r"detector.binning = true \(a boolean\) in .*sample.toml: expected an integer"),
    ("[detector]\nbinning = 1.5\n", r"detector.binning = 1.5 \(a float\) .*expected an integer >= 1"),
    ("[detector]\nbeam_center_px = \"1950, 200\"\n",
     r'detector.beam_center_px = "1950, 200" \(a string\) .*expected a list of 2 finite numbers'),
    ("[detector]\nbeam_center_px = [1950, 200, 0]\n",
     r"detector.beam_center_px = \[1950, 200, 0\] \(a list of 3 items\) .*a list of 2"),
    ("[detector]\nponi_file = 3\n", r"detector.poni_file = 3 \(an integer\) .*expected a path string"),
    ("[mask]\nfiles = \"bad.npy\"\n", r'mask.files = "bad.npy" \(a string\) .*expected a list of path strings'),
    ("[mask]\nfiles = [\"\"]\n", r'mask.files = \[""\] .*expected a list of path strings'),
    ("[mask]\nmodule_gaps = \"yes\"\n", r'mask.module_gaps = "yes" \(a string\) .*expected true or false'),
    ("[superlattice]\nbeam_direction = [\"a\", 1, 1]\n",
     r'superlattice.beam_direction = \["a", 1, 1\] .*expected a list of 3 finite numbers'),
    ("[superlattice]\nbeam_direction = [1, 1, inf]\n",
     r"superlattice.beam_direction = \[1, 1, inf\] .*expected a list of 3 finite"),
    ("[atomic_lattice]\nconfiguration = 1\n",
     r"atomic_lattice.configuration = 1 \(an integer\) .*expected one of \['conf1'"),
    ("[atomic_lattice]\nconfiguration = \"Conf1\"\n",
     r'atomic_lattice.configuration = "Conf1" .*Did you mean \'conf1\''),
    ("[atomic_lattice]\nmisorientation_deg = [0, 0]\n",
     r"atomic_lattice.misorientation_deg = \[0, 0\] .*a list of 3 finite numbers"),
    ("[atomic_lattice]\ncustom_pairs = [[1, 2], [3, 4]]\n",
     r"atomic_lattice.custom_pairs = \[\[1, 2\], \[3, 4\]\] .*expected two \[sl_direction"),
    # out of range
    ("[beam]\nenergy_kev = 0\n",
     r"beam.energy_kev = 0 \(an integer\) .*expected a finite number \(int or float\) > 0 \(keV\)"),
    ("[beam]\nenergy_kev = -13.8\n", r"beam.energy_kev = -13.8 .*> 0 \(keV\)"),
    ("[beam]\nenergy_kev = inf\n", r"beam.energy_kev = inf \(a float\) .*expected a finite number"),
    ("[beam]\nenergy_kev = 1e400\n", r"beam.energy_kev = inf .*expected a finite number"),
    ("[beam]\nexposure_s = 0.0\n", r"beam.exposure_s = 0.0 .*> 0 \(s\)"),
    ("[beam]\npolarization_factor = -1.01\n", r"beam.polarization_factor = -1.01 .*in \[-1, 1\]"),
    ("[detector]\ndistance_m = 0\n", r"detector.distance_m = 0 .*> 0 \(m\)"),
    ("[detector]\nbinning = 0\n", r"detector.binning = 0 \(an integer\) .*expected an integer >= 1"),
    ("[detector]\nbinning = -2\n", r"detector.binning = -2 .*expected an integer >= 1"),
    ("[detector]\nrot1_deg = nan\n", r"detector.rot1_deg = nan .*expected a finite number"),
    ("[mask]\nbeamstop_radius_px = -1\n", r"mask.beamstop_radius_px = -1 .*>= 0 \(pixels\)"),
    ("[mask]\nholder_width_px = -8\n", r"mask.holder_width_px = -8 .*>= 0 \(pixels\)"),
    ("[model]\nform_factor_nodes = 0\n", r"model.form_factor_nodes = 0 .*expected an integer in \[1, 1000\]"),
    ("[model]\nform_factor_nodes = 100000000\n", r"model.form_factor_nodes = 100000000 .*in \[1, 1000\]"),
    ("[model]\nband_nsigma = 0\n", r"model.band_nsigma = 0 .*> 0 \(sigmas\)"),
    ("[model]\nq_max_sl = 1000.0\n",
     r"model.q_max_sl = 1000 1/A \(from .*sample.toml\) lies beyond the Ewald-sphere limit "
                                     r"4 pi / lambda = 13.99 1/A at beam.energy_kev = 13.8"),
    ("[model]\nq_max_al = 20\n", r"model.q_max_al = 20 1/A .*beyond the Ewald-sphere limit"),
    ("[superlattice]\nlattice_constant = 0\n", r"superlattice.lattice_constant = 0 .*> 0 \(A\)"),
    ("[superlattice]\nlattice_constant = 1" + "0" * 400 + "\n",
     r"superlattice.lattice_constant = 10{400} \(an integer\) .*expected a finite number"),
    ("[superlattice]\nmosaic_deg = 0\n",
     r"superlattice.mosaic_deg = 0 .*expected a finite number \(int or float\) in \(0, 90\] \(degrees\)"),
    ("[superlattice]\nmosaic_deg = 1e6\n", r"superlattice.mosaic_deg = 1000000.0 .*in \(0, 90\]"),
    ("[superlattice]\npeak_scale = -5\n", r"superlattice.peak_scale = -5 .*>= 0 \(counts/pixel\)"),
    ("[superlattice]\ndiffuse_scale = -0.1\n", r"superlattice.diffuse_scale = -0.1 .*>= 0"),
    ("[nanocrystal]\nradius = 0\n", r"nanocrystal.radius = 0 .*> 0 \(A\)"),
    ("[atomic_lattice]\nlattice_constant = -5.936\n", r"atomic_lattice.lattice_constant = -5.936 .*> 0 \(A\)"),
    ("[atomic_lattice]\ndisorder_fwhm_deg = -1\n",
     r"atomic_lattice.disorder_fwhm_deg = -1 .*in \[0, 180\] \(degrees FWHM\)"),
    ("[atomic_lattice]\ndisorder_fwhm_deg = 400\n", r"atomic_lattice.disorder_fwhm_deg = 400 .*in \[0, 180\]"),
    ("[background]\nconstant = -1\n", r"background.constant = -1 .*>= 0 \(counts/pixel\)"),
    # unknown names: the nearest valid one is suggested
    ("[beam]\nenergy = 13.8\n", r"Unknown key beam.energy in .*sample.toml. Did you mean 'beam.energy_kev'\?"),
    ("[detector]\nbeam_centre_px = [1, 2]\n",
     r"Unknown key detector.beam_centre_px .*Did you mean 'detector.beam_center_px'\?"),
    ("[mask]\nbeamstop_radius = 12\n", r"Unknown key mask.beamstop_radius .*Did you mean 'mask.beamstop_radius_px'\?"),
    ("[atomic_lattice]\ndisorder_fwhm = 12\n",
     r"Unknown key atomic_lattice.disorder_fwhm .*Did you mean 'atomic_lattice.disorder_fwhm_deg'"),
    ("[atomic-lattice]\nradial_width = 0.04\n", r"Unknown table \[atomic-lattice\] .*Did you mean 'atomic_lattice'\?"),
    ("[Beam]\nenergy_kev = 13.8\n", r"Unknown table \[Beam\] .*Did you mean 'beam'\?"),
    ("energy_kev = 13.8\n", r"Unknown top-level key 'energy_kev' .*it belongs in a table: beam.energy_kev"),
    ("[superlattice.extra]\nx = 1\n", r"Unknown key superlattice.extra .*Valid keys of \[superlattice\]"),
    # contradictions between keys
    ("[superlattice]\nbeam_direction = [0, 0, 2]\ninplane_reference = [0, 0, -1]\n",
     r"superlattice.inplane_reference = \[0.0, 0.0, -1.0\] \(from .*sample.toml\) is parallel to "
     r"superlattice.beam_direction"),
    ('[atomic_lattice]\nconfiguration = "custom"\ncustom_pairs = [[[1, 0, 0], [1, 0, 0]], [[2, 0, 0], [0, 1, 0]]]\n',
     r"atomic_lattice.custom_pairs in .*sample.toml: the SL directions \[1.0, 0.0, 0.0\] and \[2.0, 0.0, 0.0\] "
     r"are parallel"),
    # malformed TOML
    ("[beam]\nenergy_kev = 13.8\nenergy_kev = 14\n", r"Invalid TOML in .*sample.toml: .*line 3.*Fix the syntax there"),
    ("[beam\nenergy_kev = 13.8\n", r"Invalid TOML in .*sample.toml: .*line 1"),
    ("[beam]\nenergy_kev = 13,8\n", r"Invalid TOML in .*sample.toml: .*line 2"),
]


@pytest.mark.parametrize("sample, match", FILE_FAULTS, ids=[f"file{i}" for i in range(len(FILE_FAULTS))])
def test_bad_value_in_file(experiment: Path, tmp_path: Path, sample: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config([experiment, write(tmp_path / "sample.toml", sample)])


# --- --set overrides -------------------------------------------------------------------------

SET_FAULTS = [
    ("beam.energy_kev=abc",
     r'beam.energy_kev = "abc" \(a string\) in --set beam.energy_kev=abc: expected a finite number'),
    ("beam.energy_kev=", r'beam.energy_kev = "" \(a string\) in --set beam.energy_kev=: expected a finite number'),
    ("superlattice.lattice_constant=-1",
     r"superlattice.lattice_constant = -1 .* in --set superlattice.lattice_constant=-1"),
    ("detector.binning=0",
     r"detector.binning = 0 \(an integer\) in --set detector.binning=0: expected an integer >= 1"),
    ("superlatice.lattice_constant=140", r"Unknown table \[superlatice\] in --set .*Did you mean 'superlattice'\?"),
    ("mask.gaps=false", r"Unknown key mask.gaps in --set mask.gaps=false.*Valid keys of \[mask\]"),
    ("lattice_constant=140", r"Unknown top-level key 'lattice_constant' in --set .*superlattice.lattice_constant"),
    ("name=3", r"name = 3 \(an integer\) in --set name=3: expected a string"),
    ("mask.holder_angle_deg=nan", r"mask.holder_angle_deg = nan .*expected a finite number"),
    ("model.q_max_sl=1e3", r"model.q_max_sl = 1000 1/A \(from --set model.q_max_sl=1e3\) lies beyond the Ewald"),
]


@pytest.mark.parametrize("override, match", SET_FAULTS, ids=[f"set{i}" for i in range(len(SET_FAULTS))])
def test_bad_override(experiment: Path, override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config([experiment], [override])


@pytest.mark.parametrize("text, match", [
    ("superlattice.lattice_constant 140", r"has no '='.*table.key=value"),
    ("=140", r"the key '' must be table.key with one dot"),
    ("superlattice..lattice_constant=140", r"the key 'superlattice..lattice_constant' must be table.key"),
    ("superlattice.beam_direction=[1, 1,", r"the value '\[1, 1,' is not a TOML value"),
    ('atomic_lattice.configuration="conf1', r"the value '\"conf1' is not a TOML value"),
])
def test_malformed_override(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_override(text)


# --- the files themselves --------------------------------------------------------------------

def test_non_utf8_file_names_file_line_and_byte(experiment: Path, tmp_path: Path) -> None:
    text = "[superlattice]\n# d\xe9j\xe0 vu\nlattice_constant = 150\n"
    latin = write(tmp_path / "latin.toml", text.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"Config file '.*latin.toml' is not UTF-8 text: byte 0xe9 at line 2 "
                                          r".*re-save it as UTF-8"):
        load_config([experiment, latin])


def test_binary_file_passed_as_config(experiment: Path, tmp_path: Path) -> None:
    h5 = write(tmp_path / "scan_master.h5", b"\x89HDF\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(ConfigError, match=r"Config file '.*scan_master.h5' is not UTF-8 text: byte 0x89 at line 1"):
        load_config([experiment, h5])


def test_directory_passed_as_config(experiment: Path, tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    with pytest.raises(ConfigError, match=r"Config path '.*configs' is a directory, not a TOML file. "
                                          r"Pass the TOML files themselves"):
        load_config([experiment, tmp_path / "configs"])


def test_missing_config_file(experiment: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Config file '.*sampel.toml' does not exist"):
        load_config([experiment, tmp_path / "sampel.toml"])


def test_unreadable_config_file(experiment: Path, tmp_path: Path, monkeypatch) -> None:
    """A read that fails (permissions, a dead network mount) names the file and the reason."""
    locked = write(tmp_path / "locked.toml", "[superlattice]\nlattice_constant = 150\n")
    real = Path.read_bytes

    def refuse(self: Path) -> bytes:
        if self.name == "locked.toml":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ConfigError, match=r"Config file '.*locked.toml' cannot be read: Permission denied. "
                                          r"Check its permissions"):
        load_config([experiment, locked])


def test_empty_file_alone_has_no_experiment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"No experiment configuration: no table \[beam\], \[detector\] in "
                                          r"\['.*empty.toml'\]"):
        load_config([write(tmp_path / "empty.toml", "")])


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """A UTF-8 file saved with a byte order mark (Windows editors) reads as the same TOML."""
    bom = write(tmp_path / "bom.toml", ("\ufeff" + EXPERIMENT).encode("utf-8"))
    assert load_config([bom]).beam.energy_kev == 13.8


@pytest.mark.parametrize("key", ["detector.poni_file", "mask.files"])
def test_directory_given_as_path_value(experiment: Path, tmp_path: Path, key: str) -> None:
    (tmp_path / "geom").mkdir()
    value = '"geom"' if key == "detector.poni_file" else '["geom"]'
    with pytest.raises(ConfigError, match=rf"{re.escape(key)} = \"geom\" in .*sample.toml resolves to "
                                          rf"'.*geom', which is a directory: expected a file"):
        table, name = key.split(".")
        load_config([experiment, write(tmp_path / "sample.toml", f"[{table}]\n{name} = {value}\n")])


def test_missing_mask_file(experiment: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'mask.files = "gone.npy" in .*sample.toml resolves to .*gone.npy\', '
                                          r'which does not exist'):
        load_config([experiment, write(tmp_path / "sample.toml", '[mask]\nfiles = ["gone.npy"]\n')])


# --- the experiment built from a config: mask and binning ------------------------------------

@pytest.fixture(scope="module")
def red():
    return load_config(default_paths("red"))


def test_beamstop_masking_every_pixel_is_an_error() -> None:
    cfg = load_config(default_paths("red"), ["mask.beamstop_radius_px=1e9"])
    with pytest.raises(ConfigError, match=r"mask.beamstop_radius_px = 1e\+09 with mask.holder_width_px = 8 masks every "
                                          r"pixel of the 2167 x 2070 detector .*expected a beamstop smaller than the "
                                          r"detector.*--set mask.beamstop_radius_px=12"):
        Experiment.from_config(cfg)


def test_mask_file_masking_every_pixel_is_an_error(tmp_path: Path) -> None:
    np.save(tmp_path / "all.npy", np.ones((2167, 2070), np.uint8))
    cfg = load_config(default_paths("red"), [f"mask.files=[\"{tmp_path / 'all.npy'}\"]"])
    with pytest.raises(ConfigError, match=r"The mask of .* leaves no valid pixel: .*mask.files \['.*all.npy'\] "
                                          r"together "
                                          r"cover all 4485690 pixels"):
        Experiment.from_config(cfg)


@pytest.mark.parametrize("binning, shown", [(0, "0"), (-2, "-2"), (2.5, "2.5"), (True, "True"), ("4", "'4'"),
                                            (5000, "5000")])
def test_bad_binning_argument(red, binning, shown: str) -> None:
    with pytest.raises(ConfigError, match=rf"binning = {re.escape(shown)} \(the --binning option\): expected an "
                                          rf"integer from 1 \(no binning\) to 1035 for the 2167 x 2070 detector"):
        Experiment.from_config(red, binning=binning)


def test_binning_from_config_beyond_the_detector() -> None:
    cfg = load_config(default_paths("red"), ["detector.binning=4096"])
    with pytest.raises(ConfigError, match=r"detector.binning = 4096: expected an integer from 1 \(no binning\) "
                                          r"to 1035"):
        Experiment.from_config(cfg)


def test_integral_float_binning_is_accepted() -> None:
    assert checked_binning(4.0, (2167, 2070)) == 4
