"""The ``xmodel`` command line: simulate and peaks."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from xmodel.cli import main
from xmodel.config import default_paths

YELLOW = [str(p) for p in default_paths("yellow")]


def test_simulate_writes_pattern_mask_parameters_and_png(tmp_path, capsys):
    out, png = tmp_path / "y.h5", tmp_path / "y.png"
    rc = main(["simulate", *YELLOW, "--binning", "4", "--out", str(out), "--png", str(png),
               "--counts", "1e6", "--seed", "3"])
    assert rc == 0
    assert png.stat().st_size > 10_000
    with h5py.File(out) as f:
        img = f["/entry/pattern/intensity"][()]
        mask = f["/entry/pattern/mask"][()].astype(bool)
        assert img.shape == mask.shape == (541, 517)
        assert img.dtype == np.uint32
        assert abs(int(img[~mask].sum()) - 1e6) < 5e3          # Poisson total around 1e6
        assert f["/entry/parameters/lattice_constant"][()] == pytest.approx(150.2)
        assert f["/entry/parameters/lattice_constant"].attrs["units"] == "angstrom"
        cfg = json.loads(f["/entry/config"][()])
        assert cfg["atomic_lattice"]["configuration"] == "conf2"
        refl = json.loads(f["/entry/reflections"][()])
        assert {r["lattice"] for r in refl} == {"SL", "AL"}


def test_simulate_same_seed_same_counts(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for out in (a, b):
        main(["simulate", *YELLOW, "--binning", "8", "--out", str(out), "--seed", "5"])
    with h5py.File(a) as fa, h5py.File(b) as fb:
        np.testing.assert_array_equal(fa["/entry/pattern/intensity"][()], fb["/entry/pattern/intensity"][()])


def test_peaks_json_yellow_is_the_001_zone(capsys):
    """Beam along [00-1]: four-fold 200 and 220 SL spots, 200_AL and 111_AL in the WAXS window."""
    assert main(["peaks", *YELLOW, "--binning", "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(rows[0]) >= {"lattice", "hkl", "q", "chi", "intensity", "ewald_distance"}
    sl = [r for r in rows if r["lattice"] == "SL"]
    fam = lambda r: tuple(sorted(abs(v) for v in r["hkl"]))  # noqa: E731
    s200 = [r for r in sl if fam(r) == (0, 0, 2)]
    s220 = [r for r in sl if fam(r) == (0, 2, 2)]
    assert len(s200) == 4 and all(r["hkl"][2] == 0 for r in s200)
    assert len(s220) == 4
    chis = np.sort(np.mod([r["chi"] for r in s200], 360))
    np.testing.assert_allclose(np.diff(chis), 90, atol=0.5)          # four-fold
    assert all(r["q"] == pytest.approx(2 * np.pi * 2 / 150.2, rel=2e-3) for r in s200)
    al = {fam(r) for r in rows if r["lattice"] == "AL"}
    assert {(0, 0, 2), (1, 1, 1)} <= al
    for r in rows:
        assert r["lattice"] != "AL" or -100 < r["chi"] < 10            # WAXS window


def test_peaks_table_and_set_override(capsys):
    assert main(["peaks", *YELLOW, "--binning", "4", "--set", "superlattice.beam_direction=[-1,1,0]"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["lattice", "hkl"]
    assert "1 1 1" in out or "-1 -1 -1" in out or "1 1 -1" in out     # [110] zone shows 111


def test_bad_config_reports_key_and_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[superlattice]\nlatice_constant = 150\n")
    rc = main(["peaks", YELLOW[0], str(bad)])
    assert rc == 3                                                  # bad input, not a usage error
    err = capsys.readouterr().err
    assert "latice_constant" in err and "bad.toml" in err and "lattice_constant" in err
