"""metrics.h5 as h5py sees it: the file written by test_sample_file in the C test binary
build/tests/test_metrics_writer (created, flushed, closed, reopened and appended to, like a
resumed run). The binary is built by the C test build; this file builds nothing."""
import json
import os
import re
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
WRITER = ROOT / "build" / "tests" / "test_metrics_writer"

L, H, N = 2, 3, 5


@pytest.fixture(scope="module")
def metrics_path(tmp_path_factory):
    if not os.access(WRITER, os.X_OK):
        pytest.skip(f"{WRITER.relative_to(ROOT)} is not built (build the C tests first)")
    out = tmp_path_factory.mktemp("metrics") / "m.h5"
    env = dict(os.environ, ENTRANK_METRICS_OUT=str(out), CMOCKA_MESSAGE_OUTPUT="TAP")
    proc = subprocess.run([str(WRITER)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok 1 - test_sample_file" in proc.stdout, proc.stdout
    assert out.exists()
    return out


@pytest.fixture
def f(metrics_path):
    with h5py.File(metrics_path, "r") as fh:
        yield fh


def test_root_attributes(f):
    a = f.attrs
    assert a["config"] == "model: { n_layer = 2; n_head = 3; };\ntrain: { steps = 5; };\n"
    assert a["revision"] == "abc1234"
    assert a["device"] == "cpu"
    assert isinstance(a["dp"], np.integer) and a["dp"] == 2
    assert isinstance(a["pp"], np.integer) and a["pp"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", a["created"])


def test_groups_and_datasets(f):
    assert set(f.keys()) == {"steps", "trace"}
    assert set(f["steps"].keys()) == {"step", "loss", "pair", "pair_dim1"}
    # layer and head: the dimension scales of the named axes
    assert set(f["trace"].keys()) == {"attn_entropy", "step", "map", "layer", "head"}


def test_config_as_json(f):
    """The resolved config also as JSON: no libconfig parser needed in Python."""
    assert json.loads(f.attrs["config_json"]) == {"model": {"n_layer": 2, "n_head": 3}, "train": {"steps": 5}}


def test_steps_are_int64(f):
    for name in ("/steps/step", "/trace/step"):
        assert f[name].dtype == np.int64, name
        np.testing.assert_array_equal(f[name][:], np.arange(1, N + 1))


def test_dimension_scales(f):
    """Named axes are HDF5 dimension scales (what xarray/h5netcdf and HDFView show as axes), and
    axis 0 is the group's step; a reopened file (a resumed run) attaches nothing twice."""
    d = f["/trace/attn_entropy"]
    assert [dim.label for dim in d.dims] == ["step", "layer", "head"]
    assert [[s.name for s in dim.values()] for dim in d.dims] == [["/trace/step"], ["/trace/layer"], ["/trace/head"]]
    np.testing.assert_array_equal(d.dims[1][0][:], np.arange(L))
    np.testing.assert_array_equal(d.dims[2][0][:], np.arange(H))
    assert f["/trace/layer"].attrs["CLASS"] == b"DIMENSION_SCALE" and f["/trace/layer"].maxshape == (L,)
    assert [[s.name for s in dim.values()] for dim in f["/trace/map"].dims] == [["/trace/step"], ["/trace/head"]]
    assert [[s.name for s in dim.values()] for dim in f["/steps/loss"].dims] == [["/steps/step"]]
    # An axis the writer was given no name or values for still gets a scale (0..n-1): netCDF-4
    # readers (h5netcdf, so xarray) refuse a dataset whose axes are only partly scales.
    assert [[s.name for s in dim.values()] for dim in f["/steps/pair"].dims] == [["/steps/step"], ["/steps/pair_dim1"]]
    np.testing.assert_array_equal(f["/steps/pair_dim1"][:], [0, 1])
    assert f["/steps/loss"].dims[0].label == "step"
    # Each scale lists each attachment once although the run declared its axes twice (reopen).
    refs = f["/trace/head"].attrs["REFERENCE_LIST"]
    assert len(refs) == 2   # attn_entropy axis 2 and map axis 1
    assert len(f["/trace/step"].attrs["REFERENCE_LIST"]) == 2
    assert len(f["/steps/step"].attrs["REFERENCE_LIST"]) == 2   # loss and pair


def test_half_precision_rows(f):
    m = f["/trace/map"]
    assert m.dtype == np.float16 and m.shape == (N, H)
    np.testing.assert_array_equal(m[:, 0], np.arange(N) + 0.5)
    assert m[0, 1] == np.float16(1 / 3) and m[0, 2] == np.float16(65504.0)


def test_scalar_series_continues_across_reopen(f):
    step, loss = f["/steps/step"], f["/steps/loss"]
    assert step.dtype == np.int64 and loss.dtype == np.float64
    assert step.shape == (N,) and loss.shape == (N,)
    np.testing.assert_array_equal(step[:], np.arange(1, N + 1))
    np.testing.assert_array_equal(loss[:], 4.0 - 0.25 * np.arange(N))


def test_layer_head_rows(f):
    d = f["/trace/attn_entropy"]
    assert d.shape == (N, L, H)
    assert d.dtype == np.float64
    i, l, h = np.meshgrid(np.arange(N), np.arange(L), np.arange(H), indexing="ij")
    np.testing.assert_array_equal(d[:], i + 0.125 * l + 0.0625 * h)


def test_extendable_and_chunked(f):
    for name, row_shape in [("/steps/loss", ()), ("/trace/attn_entropy", (L, H))]:
        d = f[name]
        assert d.maxshape == (None,) + row_shape
        assert d.chunks is not None
        assert d.chunks[1:] == row_shape
        assert d.chunks[0] == max(1, 64 * 1024 // (8 * int(np.prod(row_shape, dtype=int))))


def test_description_and_units(f):
    expect = {
        "/steps/step": ("optimizer step after the update", "steps"),
        "/steps/loss": ("training loss", "nats"),
        "/trace/attn_entropy": ("mean attention row entropy", "nats"),
    }
    for name, (description, units) in expect.items():
        assert f[name].attrs["description"] == description
        assert f[name].attrs["units"] == units
    # Every dataset in the file carries both, as str (variable-length UTF-8).
    def check(name, obj):
        if isinstance(obj, h5py.Dataset):
            assert isinstance(obj.attrs["description"], str) and obj.attrs["description"], name
            assert isinstance(obj.attrs["units"], str) and obj.attrs["units"], name
    f.visititems(check)


def test_axis_attributes(f):
    a = f["/trace/attn_entropy"].attrs
    assert a["axes"] == "step,layer,head"
    np.testing.assert_array_equal(a["axis1_layer"], np.arange(L))
    np.testing.assert_array_equal(a["axis2_head"], np.arange(H))
    assert a["axis1_layer"].dtype == np.int32
    assert "axis0_step" not in a  # the growing axis is named, not indexed
    assert "axes" not in f["/steps/loss"].attrs
