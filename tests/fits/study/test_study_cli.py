"""``xmodel study``: the JSON schema, Monte Carlo columns, files and errors."""
from __future__ import annotations

import json

import h5py
import numpy as np

from xmodel.cli import main
from xmodel.config import default_paths

YELLOW = [str(p) for p in default_paths("yellow")]
ARGS = ["study", *YELLOW, "--set", "detector.binning=16", "--grid", "binned"]


def test_json_schema_with_monte_carlo(capsys, tmp_path):
    out = tmp_path / "study.h5"
    rc = main(ARGS + ["--params", "lattice_constant,tilt1_deg,al_scale", "--monte-carlo", "4", "--seed", "2",
                      "--json", "--out", str(out)])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"parameters", "correlation", "condition_number", "unidentifiable", "grid", "exposure_s",
            "monte_carlo"} <= set(doc)
    names = [p["name"] for p in doc["parameters"]]
    assert names == ["lattice_constant", "tilt1_deg", "al_scale"]
    for p in doc["parameters"]:
        assert set(p) == {"name", "unit", "value", "crlb", "crlb_conditional", "mc_std", "mc_bias"}
        assert p["crlb"] >= p["crlb_conditional"] > 0 and p["mc_std"] > 0
    assert [p["unit"] for p in doc["parameters"]] == ["A", "deg", "counts"]
    assert doc["parameters"][0]["value"] == 150.2
    corr = np.array(doc["correlation"], float)
    assert corr.shape == (3, 3)
    np.testing.assert_allclose(np.diag(corr), 1.0)
    np.testing.assert_allclose(corr, corr.T, atol=1e-12)
    assert doc["condition_number"] >= 1 and doc["unidentifiable"] == []
    assert doc["monte_carlo"] == {"truth": {"n": 4, "n_used": 4, "seed": 2}}
    with h5py.File(out) as f:
        g = f["entry/study"]
        assert list(g.attrs["names"]) == names
        np.testing.assert_allclose(g["crlb"][()], [p["crlb"] for p in doc["parameters"]])
        assert g["monte_carlo/truth/values"].shape == (4, 3)


def test_json_writes_null_for_a_parameter_without_effect(capsys):
    rc = main(ARGS + ["--set", "atomic_lattice.peak_scale=0", "--params", "tilt1_deg,disorder_deg", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["parameters"][1]["crlb"] is None and doc["parameters"][1]["crlb_conditional"] is None
    assert doc["condition_number"] is None
    assert doc["unidentifiable"][0].startswith("disorder_deg has no effect")


def test_bad_vary_key_and_parameter_are_clear_errors(capsys):
    assert main(ARGS + ["--vary", "detector.distanse_m=0.3:0.6:3"]) == 3
    err = capsys.readouterr().err
    assert "unknown or non-numeric setting 'detector.distanse_m'" in err and "Valid keys are" in err
    assert "'detector.distance_m'" in err
    assert main(ARGS + ["--params", "tilt_deg"]) == 3
    assert "unknown fit parameter 'tilt_deg'" in capsys.readouterr().err
    assert main(ARGS + ["--vary", "exposure_s=0.1:1:2", "--out", "x.h5"]) == 2
    assert "--out writes the study of one pattern; for a design scan (--vary) save the --json" in \
        capsys.readouterr().err
    assert main(ARGS + ["--mc-start", "search"]) == 2
    assert "--mc-start search needs --monte-carlo N" in capsys.readouterr().err


def test_design_table(capsys):
    assert main(ARGS + ["--params", "tilt1_deg", "--vary", "exposure_s=0.3:1.2:2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "marginal Cramer-Rao bounds (edge units)"
    b = [float(ln.split()[-1]) for ln in lines[2:4]]
    assert abs(b[1] - b[0] / 2) < 1e-3 * b[0]            # 4 x the exposure: half the bound (4 digits)
