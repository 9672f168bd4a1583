"""The scripts of docs/examples run and write what they say."""
from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_simulate_pattern_example(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["simulate_pattern.py", str(tmp_path), "8"])
    runpy.run_path(str(EXAMPLES / "simulate_pattern.py"), run_name="__main__")
    assert (tmp_path / "yellow_tilt.png").stat().st_size > 20_000
    assert "default plot /entry/pattern, signal intensity, axes ['row', 'column']" in capsys.readouterr().out


def test_fit_scan_maps_example(tmp_path, monkeypatch, capsys):
    """synth -> reduce -> fit -> maps on 12 frames; the fits land near the twin's truth."""
    monkeypatch.setattr(sys, "argv", ["fit_scan_maps.py", str(tmp_path)])
    runpy.run_path(str(EXAMPLES / "fit_scan_maps.py"), run_name="__main__")
    assert (tmp_path / "maps.png").stat().st_size > 20_000
    out = capsys.readouterr().out
    match = re.search(r"(\d+) of 12 points inside the domain; median orientation error ([\d.]+) deg, "
                      r"median lattice-constant error ([\d.]+) %", out)
    assert match, out
    n, orientation_deg, a_percent = int(match[1]), float(match[2]), float(match[3])
    assert n >= 6 and orientation_deg < 2.0 and a_percent < 0.5


def test_parameter_study_example(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["parameter_study.py", str(tmp_path), "16"])
    runpy.run_path(str(EXAMPLES / "parameter_study.py"), run_name="__main__")
    assert (tmp_path / "sensitivity_tilt1.png").stat().st_size > 20_000
    out = capsys.readouterr().out
    # ten times the exposure: every bound sqrt(10) times smaller (Poisson counts scale with it)
    ratios = re.search(r"3 s / 0.3 s exposure: (\{.*\})", out)[1]
    for value in re.findall(r": ([\d.]+)", ratios):
        assert float(value) == pytest.approx(10 ** -0.5, abs=0.002)
    assert re.search(r"tilt1_deg: \+- [\d.e-]+ \(marginal\)", out)


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_a_test(script):
    assert script in Path(__file__).read_text()
