"""Tests of xmodel.positions, xmodel.fio and the shared scan options: every position source,
the monitor, the grid derived from jittered positions, and the errors users meet."""
from __future__ import annotations

import argparse

import h5py
import numpy as np
import pytest

from xmodel.commands._scan_args import add_scan_arguments, resolve_scan_arguments
from xmodel.fio import FioError, read_fio, write_fio
from xmodel.positions import (PositionsError, derive_grid, grid_positions, parse_scan_shape, parse_step,
                              read_monitor, read_positions)

SNAKE_2x3 = [[0.0, 0.0], [0.0, 1.0], [0.0, 2.0], [2.0, 2.0], [2.0, 1.0], [2.0, 0.0]]


def test_grid_raster_and_snake():
    raster = grid_positions((2, 3), (2.0, 1.0), "raster")
    assert raster.tolist() == [[0, 0], [0, 1], [0, 2], [2, 0], [2, 1], [2, 2]]
    assert grid_positions((2, 3), (2.0, 1.0), "snake").tolist() == SNAKE_2x3
    assert parse_scan_shape("121x121") == (121, 121) and parse_step("0.5,0.25") == (0.5, 0.25)
    assert parse_step("0.25") == (0.25, 0.25)
    with pytest.raises(PositionsError, match=r"--scan-shape '12' is not ROWSxCOLS"):
        parse_scan_shape("12")
    with pytest.raises(PositionsError, match=r"--step-um '-1' is not a positive step"):
        parse_step("-1")
    with pytest.raises(PositionsError, match="must be 'raster' or 'snake'"):
        grid_positions((2, 2), 1.0, "spiral")


def test_csv_default_and_named_columns(tmp_path):
    path = tmp_path / "pos.csv"
    path.write_text("# x_um,y_um,t\n0,0,a\n1,0,b\n2,0,c\n2,2,d\n1,2,e\n0,2,f\n")
    np.testing.assert_allclose(read_positions(path, 6), [[0, 0], [0, 1], [0, 2], [2, 2], [2, 1], [2, 0]])
    commented = tmp_path / "c.csv"
    commented.write_text("# written by the beamline, scan 42\nx (mm),y (mm)\n0.001,0\n0.002,0.001\n")
    np.testing.assert_allclose(read_positions(commented, 2, columns=("x (mm)", "y (mm)")), [[0, 1], [1, 2]])
    bare = tmp_path / "bare.txt"
    bare.write_text("0 0\n1 0\n")
    with pytest.raises(PositionsError, match="has no header line naming its columns"):
        read_positions(bare, 2)
    other = tmp_path / "motors.txt"
    other.write_text("idx  sx_mm  sy_mm\n0 0.000 0.0\n1 0.001 0.0\n")
    np.testing.assert_allclose(read_positions(other, 2, columns=("sx_mm", "sy_mm")), [[0, 0], [0, 1.0]])


def test_npy_and_h5_sources(tmp_path):
    pos = grid_positions((2, 3), (2.0, 1.0), "snake")
    np.save(tmp_path / "p.npy", pos)
    np.testing.assert_array_equal(read_positions(tmp_path / "p.npy", 6), pos)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["entry/positions"] = pos / 1000.0
        f["entry/positions"].attrs["units"] = "mm"
        f["entry/monitor"] = np.arange(1.0, 7.0)
    np.testing.assert_allclose(read_positions(f"{tmp_path / 'scan.h5'}:/entry/positions", 6), pos)
    np.testing.assert_array_equal(read_monitor(f"{tmp_path / 'scan.h5'}:/entry/monitor", 6), np.arange(1.0, 7.0))


def test_p10_fio_motor_columns_in_mm_and_monitor(tmp_path):
    """A .fio as P10's online writes it: comments, parameters, Col lines, rows; mm converted to um."""
    text = """!
! Comments
!
%c
dmesh sample_x 0 0.002 2 sample_y 0 0.002 1 0.3
user p10user Acquisition started at Mon Jun  5 10:00:00 2023
!
! Parameter
!
%p
sample_x_unit = mm
sample_y_unit = mm
energy = 13800.0
!
! Data
!
%d
 Col 1 sample_x DOUBLE
 Col 2 sample_y DOUBLE
 Col 3 ion1 DOUBLE
 Col 4 timestamp DOUBLE
 0.0000 0.0000 1000 0.1
 0.0010 0.0000 1200 0.4
 0.0020 0.0000  800 0.7
 0.0020 0.0020 1000 1.0
 0.0010 0.0020  900 1.3
 0.0000 0.0020 1100 1.6
"""
    path = tmp_path / "scan_00042.fio"
    path.write_text(text)
    fio = read_fio(path)
    assert fio.columns == ["sample_x", "sample_y", "ion1", "timestamp"] and fio.parameters["energy"] == 13800.0
    assert fio.comments[0].startswith("dmesh") and fio.n_rows == 6
    np.testing.assert_allclose(read_positions(path, 6, columns=("sample_x", "sample_y")), SNAKE_2x3)
    np.testing.assert_array_equal(read_monitor(f"{path}:ion1", 6), [1000, 1200, 800, 1000, 900, 1100])
    # the writer's own .fio round-trips
    write_fio(tmp_path / "w.fio", {"x_um": [0, 1], "y_um": [0, 0], "monitor": [5, 6]})
    np.testing.assert_array_equal(read_positions(tmp_path / "w.fio", 2), [[0, 0], [0, 1]])


def test_clear_errors(tmp_path):
    path = tmp_path / "pos.csv"
    path.write_text("x_um,y_um\n0,0\n1,0\n")
    with pytest.raises(PositionsError, match=r"Positions file .*pos\.csv has 2 rows but the scan has 3 frames"):
        read_positions(path, 3)
    with pytest.raises(PositionsError, match=r"pos\.csv has no column 'sx'; its columns are \['x_um', 'y_um'\]"):
        read_positions(path, 2, columns=("sx", "sy"))
    mon = tmp_path / "mon.csv"
    mon.write_text("i0\n100\n0\n")
    with pytest.raises(PositionsError, match=r"frame 1 reads 0; a monitor of zero, below zero or not finite"):
        read_monitor(f"{mon}:i0", 2)
    with pytest.raises(PositionsError, match=r"Name the monitor column of .*mon\.csv: --monitor .*:COLUMN"):
        read_monitor(mon, 2)
    bad = tmp_path / "bad.fio"
    bad.write_text("%d\n Col 1 a DOUBLE\n Col 2 b DOUBLE\n1 2\n3\n")
    with pytest.raises(FioError, match=r"bad\.fio, line 5: 1 values but 2 columns"):
        read_fio(bad)
    with pytest.raises(PositionsError, match="does not exist"):
        read_positions(tmp_path / "nope.csv", 2)


def test_grid_from_jittered_snake_positions():
    rng = np.random.default_rng(0)
    pos = grid_positions((5, 7), (0.25, 0.25), "snake") + rng.normal(0, 0.01, (35, 2)) + [3.0, -1.0]
    grid = derive_grid(pos)
    assert grid.shape == (5, 7)
    assert grid.step_um == pytest.approx((0.25, 0.25), rel=0.02)
    image = grid.image(np.arange(35))
    assert image[1].tolist() == list(range(13, 6, -1))  # the reversed row is put back in place
    assert derive_grid(rng.uniform(0, 10, (30, 2))) is None  # scattered points: no grid


def parse(argv):
    p = argparse.ArgumentParser()
    add_scan_arguments(p)
    return p.parse_args(argv)


def test_scan_arguments_resolve(tmp_path):
    got = resolve_scan_arguments(parse(["--scan-shape", "2x3", "--step-um", "2,1", "--scan-order", "snake"]), 6)
    assert got.positions_um.tolist() == SNAKE_2x3 and got.scan_shape == (2, 3) and got.monitor is None
    assert resolve_scan_arguments(parse([]), 6).positions_um is None
    write_fio(tmp_path / "s.fio", {"sx": [0, 1], "sy": [0, 0], "ion1": [10, 20]})
    got = resolve_scan_arguments(parse(["--positions", str(tmp_path / "s.fio"), "--position-columns", "sx,sy",
                                        "--position-units", "mm", "--monitor", f"{tmp_path / 's.fio'}:ion1"]), 2)
    assert got.positions_um.tolist() == [[0, 0], [0, 1000]] and got.monitor.tolist() == [10, 20]
    with pytest.raises(PositionsError, match=r"--scan-shape 2x2 holds 4 points but the scan has 6 frames"):
        resolve_scan_arguments(parse(["--scan-shape", "2x2"]), 6)
    with pytest.raises(PositionsError, match="--step-um needs --scan-shape"):
        resolve_scan_arguments(parse(["--step-um", "1"]), 6)
