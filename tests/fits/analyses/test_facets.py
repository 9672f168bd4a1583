"""Tests of fits.analyses.facets: the paper's facet-interaction counts and the shape window."""
import json

import pytest

from fits.analyses.facets import facet_interactions, nearest_neighbour_directions, paper_shape_window
from xmodel import cli


def test_paper_counts_default_shape():
    c1 = facet_interactions("conf1")
    assert (c1.n100, c1.n111) == (4, 8)
    c2 = facet_interactions("Conf2")
    assert (c2.n100, c2.n111) == (10, 0)
    edges = [c for c in c2.contacts if c.family == "edge"]
    assert len(edges) == 2 and all(c.interaction == "none" for c in edges)
    off = [c for c in c2.contacts if c.family == "100" and c.angle_deg > 1]
    assert len(off) == 8
    assert all(c.angle_100_deg == pytest.approx(31.4, abs=0.05) for c in off)
    assert all(c.angle_111_deg == pytest.approx(30.0, abs=0.05) for c in off)


def test_shape_window():
    lo, hi = paper_shape_window()
    assert lo == pytest.approx(0.7174, abs=1e-4) and hi == pytest.approx(0.9856, abs=1e-4)
    # regular truncated octahedron (d100/d111 = 2/sqrt 3): Conf2 gives 2 + 8, not the paper's 10
    reg = facet_interactions("conf2", d100=2.0, d111=3 ** 0.5)
    assert (reg.n100, reg.n111) == (2, 8)
    assert (facet_interactions("conf2", d100=hi * 1.01, d111=1).n100) == 2
    assert (facet_interactions("conf2", d100=hi * 0.99, d111=1).n100) == 10
    assert facet_interactions("conf1", d100=lo * 1.01, d111=1).n111 == 8
    assert facet_interactions("conf1", d100=lo * 0.99, d111=1).n111 == 0
    # a small acceptance angle drops the 31-deg contacts
    assert facet_interactions("conf2", max_angle_deg=20).n100 == 2


def test_directions():
    d = nearest_neighbour_directions()
    assert d.shape == (12, 3) and all(sorted(abs(x) for x in v) == [0, 1, 1] for v in d.tolist())


def test_errors():
    with pytest.raises(ValueError, match="unknown configuration 'conf3'"):
        facet_interactions("conf3")
    with pytest.raises(ValueError, match="d100 must be a positive distance"):
        facet_interactions("conf1", d100=0)
    with pytest.raises(ValueError, match="max_angle_deg must be in"):
        facet_interactions("conf1", max_angle_deg=120)
    with pytest.raises(ValueError, match="needs relationship=R_or"):
        facet_interactions("custom")


def test_cli(capsys):
    assert cli.main(["facets", "--configuration", "conf1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n_100_100"], out["n_111_111"]) == (4, 8) and len(out["contacts"]) == 12
    assert cli.main(["facets", "--configuration", "conf2", "--d100", "2", "--d111", "1.7320508"]) == 0
    assert "2 {100}-{100} and 8 {111}-{111}" in capsys.readouterr().out
