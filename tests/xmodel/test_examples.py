"""The scripts of docs/examples run and write what they say."""
from __future__ import annotations

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


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_a_test(script):
    assert script in Path(__file__).read_text()
