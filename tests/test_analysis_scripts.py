"""Tests of the offline analysis commands analysis/{summarize,compare,plot} (issue 7).

Two kinds of input:
- small metrics.h5 files written here in the trainer's exact layout (extendable, chunked float64
  datasets with description/units, axis attributes, root attributes with the resolved config text)
  holding known values: the posts' own numbers must come out of the tables;
- the metrics.h5 of a real short training run (today: /steps and /eval only), read while the
  trainer is still writing it and after it has finished.
"""
import csv
import io
import json
import math
import os
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

import h5py
from conftest import BIN, load_source, start_entrank

ROOT = Path(__file__).resolve().parent.parent
ANALYSIS = ROOT / "analysis"
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
sys.path.insert(0, str(ANALYSIS))
import entrank_metrics as em  # noqa: E402


def load_script(name):
    """An analysis command (a file without .py) as a module, to call its main() in-process."""
    return load_source(f"analysis_{name}", ANALYSIS / name)


def run_script(name, *args, timeout=60):
    """An analysis command run as its own process, its output captured."""
    return subprocess.run([PYTHON, str(ANALYSIS / name), *map(str, args)], capture_output=True, text=True, timeout=timeout)


SUMMARIZE, COMPARE, PLOT = load_script("summarize"), load_script("compare"), load_script("plot")


def call(mod, *args):
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = mod.main([str(a) for a in args])
    return rc, buf.getvalue()


# ---------------------------------------------------------------------------------------------
# A writer of metrics.h5 in the trainer's layout (src/metrics.c)

CHUNK_BYTES = 64 * 1024


def config_text(n_layer=8, n_head=4, kind="sdpa", data="logic", depth_min=2, depth_max=6,
                r3si_layers=None, distances=None, steps=100, trace_every=4, seq_len=32):
    """Resolved-config text in the trainer's style (groups, aligned values, // comments). Like the
    trainer's, it has every key: a run without R3SI has r3si.enabled = false and the schema's
    default r3si.layers = [14, 18, 22, 26], layers the run does not have."""
    if r3si_layers is not None:
        r3 = ("r3si = {\n  enabled = true;                            // R3SI on\n"
              f"  layers = [{', '.join(map(str, r3si_layers))}];   // checkpoint blocks\n  k = 64;\n}};\n\n")
    else:
        r3 = ("r3si = {\n  enabled = false;                           // R3SI off\n"
              "  layers = [14, 18, 22, 26];                 // checkpoint blocks (the default)\n  k = 64;\n};\n\n")
    dist = ", ".join(map(str, distances or [128, 256, 512, 1024]))
    return (
        "// entrank configuration, fully resolved: every key, defaults included.\n\n"
        f"model = {{\n  n_layer = {n_layer};                               // transformer blocks\n"
        f"  n_head = {n_head};\n  d_model = 64;\n  seq_len = {seq_len};\n  norm = \"pre\";\n  mlp_ratio = 4.0;\n}};\n\n"
        f"attention = {{\n  kind = \"{kind}\";                             // attention: sdpa | sga\n}};\n\n"
        f"{r3}"
        f"train = {{\n  steps = {steps};\n  tokens = 0.0;\n  batch_size = 8;\n  lr = 0.003;\n}};\n\n"
        f"data = {{\n  kind = \"{data}\";\n  train = \"\";\n  logic = {{\n    depth_min = {depth_min};\n"
        f"    depth_max = {depth_max};\n  }};\n  retrieval = {{\n    distances = [{dist}];\n  }};\n}};\n\n"
        f"trace = {{\n  every = {trace_every};\n  snapshot_layers = [];\n}};\n")


def nest(flat):
    """{"model.n_layer": 8} -> {"model": {"n_layer": 8}}: the trainer's config_json from flat keys."""
    tree = {}
    for key, v in flat.items():
        *groups, name = key.split(".")
        t = tree
        for g in groups:
            t = t.setdefault(g, {})
        t[name] = v
    return tree


def write_metrics(path, datasets, config, dp=1, pp=1, device="cpu", config_json=True):
    """datasets: {name: (rows, description, units, axes or None, {axis: index values})}. As the
    trainer writes them: a group's `step` is int64 and the dimension scale of axis 0 of the group's
    datasets; named axes with index values are scales <group>/<axis name> (axis<k>_<name> too)."""
    with h5py.File(path, "w") as f:
        f.attrs["config"] = config
        if config_json:
            f.attrs["config_json"] = json.dumps(nest(em.parse_config(config)))
        f.attrs["revision"] = "test"
        f.attrs["device"] = device
        f.attrs["created"] = "2026-01-01T00:00:00Z"
        f.attrs.create("dp", dp, dtype=np.int32)
        f.attrs.create("pp", pp, dtype=np.int32)
        for name, spec in datasets.items():
            rows, description, units = spec[:3]
            axes = spec[3] if len(spec) > 3 else None
            layer_axes = spec[4] if len(spec) > 4 else {}
            rows = np.asarray(rows)
            dtype = rows.dtype if rows.dtype == np.float16 else np.int64 if name.endswith("/step") else np.float64
            row_shape = rows.shape[1:]
            chunk = max(1, CHUNK_BYTES // (np.dtype(dtype).itemsize * int(np.prod(row_shape, dtype=int))))
            d = f.create_dataset(name, shape=(0,) + row_shape, maxshape=(None,) + row_shape,
                                 chunks=(chunk,) + row_shape, dtype=dtype)
            d.resize(rows.shape[0], axis=0)
            if rows.shape[0]:
                d[...] = rows.astype(dtype)
            d.attrs["description"] = description
            d.attrs["units"] = units
            if axes:
                d.attrs["axes"] = axes
            names = axes.split(",") if axes else []
            for axis, idx in layer_axes.items():
                axis_name = names[axis] if axis < len(names) else "layer"
                d.attrs.create(f"axis{axis}_{axis_name}", np.asarray(idx, dtype=np.int32))
        for name in list(datasets):
            group = name.rsplit("/", 1)[0]
            d = f[name]
            step = f.get(group + "/step")
            if name.endswith("/step"):
                if not h5py.h5ds.is_scale(d.id):
                    d.make_scale("step")
                continue
            if step is not None:
                if not h5py.h5ds.is_scale(step.id):
                    step.make_scale("step")
                d.dims[0].attach_scale(step)
                d.dims[0].label = "step"
            axes = datasets[name][3] if len(datasets[name]) > 3 else None
            for axis, idx in (datasets[name][4] if len(datasets[name]) > 4 else {}).items():
                axis_name = axes.split(",")[axis]
                sname = f"{group}/{axis_name}"
                if sname not in f:
                    sc = f.create_dataset(sname, data=np.asarray(idx, dtype=np.int32))
                    sc.make_scale(axis_name)
                    sc.attrs["description"] = f"values of the '{axis_name}' axis (dimension scale)"
                    sc.attrs["units"] = "index"
                d.dims[axis].attach_scale(f[sname])
                d.dims[axis].label = axis_name
    return path


def interp_profile(points, L):
    """Per-layer values through control points {layer: value} (exact at the points)."""
    xs = sorted(points)
    return np.interp(np.arange(L), xs, [points[x] for x in xs])


def head_values(mean, spread, H):
    """Per-head values with exactly this mean and population variance spread^2 (H even)."""
    z = np.array([1.0 if h % 2 == 0 else -1.0 for h in range(H)])
    return mean[:, None] + spread[:, None] * z[None, :]


def make_run(run_dir, L=8, H=4, n_trace=5, n_steps=20, entropy=None, spread=None, val_ppl=None,
             task_acc=None, resid=None, kind="sdpa", r3si_layers=None, traces=True, sga=None, r3si=None,
             snapshots=False, data="logic", depth_min=2, depth_max=6, extra_attrs=None, drop=(), seq_len=32,
             config_json=True):
    """A run directory with metrics.h5. The last trace row holds exactly `entropy` (per-layer mean
    over heads) with head spread `spread`; earlier rows move linearly from 3.5 nats towards it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    steps = np.arange(n_steps, dtype=float)
    loss = 4.0 - 2.0 * steps / max(1, n_steps - 1)
    ds = {
        "/steps/step": (steps, "optimizer step (0-based)", "step"),
        "/steps/tokens": ((steps + 1) * 256, "tokens consumed after this step", "tokens"),
        "/steps/loss": (loss, "total training loss (LM loss + auxiliary losses)", "nats/token"),
        "/steps/lm_loss": (loss, "language-model cross-entropy over scored positions", "nats/token"),
        "/steps/aux_loss": (np.zeros(n_steps), "auxiliary losses (regularisers); 0 without any", "nats/token"),
        "/steps/lr": (np.full(n_steps, 1e-3), "learning rate of this step", "1"),
        "/steps/grad_norm": (np.ones(n_steps), "global gradient L2 norm before clipping", "1"),
        "/steps/step_ms": (np.full(n_steps, 10.0), "wall time of the step", "ms"),
        "/steps/tokens_per_s": (np.full(n_steps, 25600.0), "training throughput", "tokens/s"),
        "/steps/mfu": (np.full(n_steps, 0.1), "achieved FLOP/s over the device peak", "fraction"),
    }
    ev_steps = np.array([n_steps // 2 - 1, n_steps - 1], dtype=float)
    final_ppl = 20.0 if val_ppl is None else val_ppl
    vl = np.array([math.log(final_ppl) + 0.5, math.log(final_ppl)])
    ds["/eval/step"] = (ev_steps, "step after which the evaluation ran", "step")
    ds["/eval/val_loss"] = (vl, "validation cross-entropy over scored positions", "nats/token")
    ds["/eval/val_ppl"] = (np.exp(vl), "exp(val_loss)", "1")
    if task_acc is not None:
        acc = np.asarray(task_acc, dtype=float)
        ds["/eval/task_acc"] = (np.stack([acc * 0.5, acc]), "answer accuracy per task bucket (depth or distance); "
                                "NaN if empty", "fraction")
    layers = np.arange(L)
    tsteps = np.linspace(0, n_steps - 1, n_trace).round()
    w = np.linspace(0, 1, n_trace)[:, None, None]
    if traces:
        ent = np.full(L, 3.0) if entropy is None else np.asarray(entropy, dtype=float)
        spr = np.full(L, 0.2) if spread is None else np.asarray(spread, dtype=float)
        final = head_values(ent, spr, H)                                    # [L, H]
        e = (1 - w) * 3.5 + w * final[None]                                 # [n, L, H]
        ds["/trace/step"] = (tsteps, "optimizer step of the trace", "step")
        ds["/trace/attn_entropy"] = (e, "mean attention row entropy", "nats", "step,layer,head", {1: layers})
        ds["/trace/attn_entropy_bh"] = (np.repeat(e[:, :, None, :], 2, axis=2), "mean row entropy per sequence "
                                        "and head", "nats", "step,layer,batch,head", {1: layers})
        depth = layers / max(1, L - 1)
        ds["/trace/head_redundancy"] = (np.linspace(0.2, 1, n_trace)[:, None] * (0.3 + 0.5 * depth)[None],
                                        "mean pairwise cosine of heads' maps", "1", "step,layer", {1: layers})
        ds["/trace/attn_eff_rank"] = (np.broadcast_to((20 - 12 * depth)[None, :, None], (n_trace, L, H)).copy(),
                                      "||A||_F^4 / ||A A^T||_F^2", "1", "step,layer,head", {1: layers})
        rr = np.linspace(40, 10, L + 1) if resid is None else np.asarray(resid, dtype=float)
        ds["/trace/resid_rank"] = (np.broadcast_to(rr, (n_trace, L + 1)).copy(), "participation ratio of the "
                                   "residual stream entering each block, and the final one", "1", "step,stream",
                                   {1: np.arange(L + 1)})
        ds["/trace/token_cos"] = (np.broadcast_to(np.linspace(0.4, 0.92, L + 1), (n_trace, L + 1)).copy(),
                                  "mean cosine of adjacent tokens", "1", "step,stream", {1: np.arange(L + 1)})
        ds["/trace/grad_diversity"] = (np.broadcast_to(np.linspace(0.05, 0.01, L), (n_trace, L)).copy(),
                                       "variance of pairwise cosines of per-head gradients", "1", "step,layer",
                                       {1: layers})
    if sga is not None:
        alpha = np.clip((1 - w[:, :, 0]) * 0.1 + w[:, :, 0] * np.asarray(sga)[None], 0, 1)   # [n, L]
        ds["/sga/alpha"] = (alpha, "blend coefficient alpha_l", "1", "step,layer", {1: layers})
        ds["/sga/stats"] = (np.broadcast_to(np.array([0.3, 0.2, 0.1, 0.6]), (n_trace, L, 4)).copy(),
                            "mean spectral statistics", "1", "step,layer,stat", {1: layers})
        band = np.stack([1 - 0.3 * depth, 0.9 + 0 * depth, 0.5 + 0.2 * depth, 0.5 - 0.1 * depth], axis=1)
        ds["/sga/gate_band"] = (np.broadcast_to(band, (n_trace, L, 4)).copy(), "mean gate over DC, low, mid, high",
                                "1", "step,layer,band", {1: layers})
    if r3si is not None:
        C = len(r3si_layers)
        n_mon = r3si.get("n", 4)
        msteps = np.linspace(0, n_steps - 1, n_mon).round()
        rank = np.asarray(r3si["rank"], dtype=float)
        ranks = np.linspace(0.5, 1, n_mon)[:, None] * rank[None]
        tau = np.full(n_mon, r3si.get("tau", 30.0))
        ds["/r3si/step"] = (msteps, "monitor step", "step")
        ds["/r3si/tau"] = (tau, "rank threshold", "1")
        ds["/r3si/rho"] = (np.linspace(0.02, 0.01, n_mon), "gradient diversity meta-signal", "1")
        ds["/r3si/rank"] = (ranks, "participation ratio at checkpoint layers", "1", "step,layer",
                            {1: r3si_layers} if r3si.get("axis_attr", True) else {})
        ds["/r3si/alpha"] = (np.maximum(0, tau[:, None] - ranks) / tau[:, None], "injection alpha", "1",
                             "step,layer", {1: r3si_layers})
        ds["/r3si/inject_ratio"] = (np.full((n_mon, C), 0.01), "||delta|| / ||H||", "1", "step,layer",
                                    {1: r3si_layers})
        ds["/steps/lsd"] = (np.full(n_steps, 0.05), "L_SD", "nats/token")
    if snapshots:
        T = 16
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(2, 2, H, T, T)) * np.linspace(0.5, 4, 2)[None, :, None, None, None]
        mask = np.tril(np.ones((T, T), dtype=bool))
        logits = np.where(mask, logits, -np.inf)
        p = np.exp(logits - logits.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        ds["/snapshot/step"] = (np.array([0.0, n_steps - 1.0]), "step of the snapshot", "step")
        ds["/snapshot/attn"] = (p.astype(np.float16), "attention maps of sequence 0", "1",
                                "step,layer,head,query,key", {1: [1, L - 1]})
    for name in drop:
        ds.pop(name, None)
    cfg = config_text(L, H, kind=kind, data=data, depth_min=depth_min, depth_max=depth_max, r3si_layers=r3si_layers,
                      steps=n_steps, trace_every=4 if traces else 0, seq_len=seq_len)
    write_metrics(run_dir / "metrics.h5", ds, cfg, config_json=config_json)
    if extra_attrs:
        with h5py.File(run_dir / "metrics.h5", "a") as f:
            for name, attrs in extra_attrs.items():
                for k, v in attrs.items():
                    f[name].attrs[k] = v
            if "/snapshot/attn" in f:
                f["/snapshot/attn"].attrs["layers"] = np.array([1, L - 1], dtype=np.int32)
    elif snapshots:
        with h5py.File(run_dir / "metrics.h5", "a") as f:
            f["/snapshot/attn"].attrs["layers"] = np.array([1, L - 1], dtype=np.int32)
    return run_dir


# The SGA post's 48-layer entropy profiles: layer 4 -> 3.42 nats everywhere; layer 40: SDPA 0.87,
# SGA 2.14, entropy regularisation 1.31 (stable to 14, decline 15-22, steep from 23 in SDPA).
SDPA_48 = {0: 3.5, 4: 3.42, 14: 3.3, 22: 2.6, 40: 0.87, 47: 0.8}
SGA_48 = {0: 3.5, 4: 3.42, 14: 3.35, 22: 2.9, 40: 2.14, 47: 2.1}
ER_48 = {0: 3.5, 4: 3.42, 14: 3.3, 22: 2.7, 40: 1.31, 47: 1.25}
SGA_ALPHA_48 = {0: 0.1, 14: 0.18, 22: 0.7, 47: 0.82}


@pytest.fixture(scope="module")
def sga_runs(tmp_path_factory):
    """SDPA, SGA and entropy-reg. runs of 48 layers with the SGA post's numbers."""
    d = tmp_path_factory.mktemp("sga")
    L, H = 48, 12
    runs = {}
    for name, prof, ppl, acc, kind in [
            ("sdpa", SDPA_48, 21.1, [0.87, 0.70, 0.548, 0.35, 0.221], "sdpa"),
            ("sga", SGA_48, 18.3, [0.89, 0.80, 0.713, 0.55, 0.437], "sga"),
            ("entropy-reg", ER_48, 21.7, [0.85, 0.68, 0.50, 0.30, 0.198], "sdpa")]:
        runs[name] = make_run(d / name, L=L, H=H, entropy=interp_profile(prof, L), val_ppl=ppl, task_acc=acc,
                              kind=kind, sga=interp_profile(SGA_ALPHA_48, L) if kind == "sga" else None,
                              snapshots=(kind == "sga"))
    return runs


@pytest.fixture(scope="module")
def r3si_runs(tmp_path_factory):
    """32-layer baseline and R3SI runs: per-head entropy variance 4.7 at layer 8 and 0.9 at layer 26
    in the baseline (the R3SI post's numbers), residual rank 41 -> 89 at layer 24."""
    d = tmp_path_factory.mktemp("r3si")
    L, H = 32, 16
    ent = np.full(L, 3.0)
    base_spread = np.full(L, 1.0)
    base_spread[8], base_spread[26] = math.sqrt(4.7), math.sqrt(0.9)
    r3_spread = np.full(L, 1.0)
    r3_spread[8], r3_spread[26] = math.sqrt(4.0), math.sqrt(1.33)
    resid_b = np.linspace(120, 30, L + 1)
    resid_b[24] = 41.0
    resid_r = resid_b.copy()
    resid_r[24] = 89.0
    layers = [14, 18, 22, 26]
    base = make_run(d / "baseline", L=L, H=H, entropy=ent, spread=base_spread, val_ppl=13.8, resid=resid_b)
    r3 = make_run(d / "r3si", L=L, H=H, entropy=ent, spread=r3_spread, val_ppl=12.3, resid=resid_r,
                  r3si_layers=layers, r3si={"rank": [60, 70, 80, 50], "tau": 75.0})
    return {"baseline": base, "r3si": r3}


def md_value(md, quantity):
    """The value cell of the first markdown row whose first cell starts with `quantity`."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(quantity):
            return cells[1]
    raise AssertionError(f"no row {quantity!r} in:\n{md}")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# The posts' arithmetic

def test_post_formulas():
    # SGA post: 3.42 nats at layer 4 -> 0.87 at layer 40 is a 74.6 % collapse; SGA 2.14 is 37.4 %.
    c_sdpa, c_sga, c_er = em.collapse_pct(3.42, 0.87), em.collapse_pct(3.42, 2.14), em.collapse_pct(3.42, 1.31)
    assert round(c_sdpa, 1) == 74.6 and round(c_sga, 1) == 37.4 and round(c_er, 1) == 61.7
    assert em.retention(3.42, 0.87) == pytest.approx(1 - c_sdpa / 100)
    # Retention improvement = collapse_base - collapse_run, in points: from the post's rounded
    # collapses 74.6 - 37.4 = 37.2. The post prints "34" (and "14" for entropy regularisation, where
    # this gives 12.9): no single formula of its numbers gives both, see entrank_metrics.
    assert em.retention_improvement(74.6, 37.4) == pytest.approx(37.2)
    assert em.retention_improvement(c_sdpa, c_sga) == pytest.approx(100 * (2.14 - 0.87) / 3.42)
    assert round(em.retention_improvement(c_sdpa, c_er), 1) == 12.9
    # Averaged over a range of deep layers (the post's "across layers 20 to 48").
    assert em.retention_improvement([70, 60], [40, 50]) == pytest.approx(20.0)
    # R3SI post: 0.9 / 4.7 nats^2 (layer 26 / layer 8) is below 0.25; perplexity 13.8 -> 12.3 is
    # a 10.9 % improvement, LogiQA 53.1 -> 58.4 is 10.0 %, rank 41 -> 89 is 117 %.
    ratio = em.diagnostic_ratio(0.9, 4.7)
    assert ratio == pytest.approx(0.1915, abs=1e-4) and ratio < em.DIAGNOSTIC_WARN
    assert round(em.rel_change_pct(13.8, 12.3), 1) == -10.9
    assert round(em.rel_change_pct(53.1, 58.4), 1) == 10.0
    assert round(em.rel_change_pct(41, 89)) == 117
    assert em.diff(18.3, 21.1) == pytest.approx(2.8)     # SGA post: 2.8 perplexity points
    # Layers at a depth fraction: the posts' layers come out for their depths.
    assert em.layer_at(4 / 48, 48) == 4 and em.layer_at(40 / 48, 48) == 40
    assert em.layer_at(0.25, 32) == 8 and em.layer_at(0.80, 32) == 26
    assert em.layer_at(0.8, 8) == 6 and em.layer_at(0.25, 8) == 2
    assert em.head_variance([1.0, 3.0, 1.0, 3.0]) == pytest.approx(1.0)    # population variance
    assert em.collapse_pct(0.0, 1.0) is None and em.collapse_pct(None, 1.0) is None


def test_config_parser():
    text = config_text(32, 16, kind="sga", r3si_layers=[14, 18, 22, 26]) + \
        '/* block */ extra = { s = "a" "b"; f = -1.5e-3; h = 0x10; b = TRUE; l = ( 1, "x" ); };\n'
    c = em.parse_config(text)
    assert c["model.n_layer"] == 32 and c["model.n_head"] == 16
    assert c["attention.kind"] == "sga" and c["r3si.layers"] == [14, 18, 22, 26] and c["r3si.enabled"] is True
    assert c["data.logic.depth_min"] == 2 and c["data.retrieval.distances"] == [128, 256, 512, 1024]
    assert c["model.mlp_ratio"] == 4.0 and c["train.tokens"] == 0.0
    assert c["extra.s"] == "ab" and c["extra.f"] == -1.5e-3 and c["extra.h"] == 16 and c["extra.b"] is True
    assert c["extra.l"] == [1, "x"]
    assert em.parse_config("model: { n_layer = 2; n_head = 3; };\ntrain: { steps = 5; };\n") == \
        {"model.n_layer": 2, "model.n_head": 3, "train.steps": 5}


def test_writer_matches_trainer_layout(tmp_path, real_run):
    """The synthetic files of these tests have the layout of the trainer's metrics.h5."""
    mine = make_run(tmp_path / "x", L=2, H=2) / "metrics.h5"
    with h5py.File(real_run / "metrics.h5", "r") as fr, h5py.File(mine, "r") as fm:
        assert set(fr.attrs) <= set(fm.attrs)
        for k in fr.attrs:
            assert type(fr.attrs[k]) is type(fm.attrs[k]), k
        for name in ["/steps/loss", "/steps/step", "/eval/val_loss", "/eval/val_ppl"]:
            r, m = fr[name], fm[name]
            assert (r.dtype, r.maxshape, r.chunks) == (m.dtype, m.maxshape, m.chunks), name
            assert {k: type(v) for k, v in r.attrs.items()} == {k: type(v) for k, v in m.attrs.items()}, name
        r = fr["/eval/task_acc"]
        assert r.dtype == np.float64 and r.maxshape == (None, r.shape[1])


# ---------------------------------------------------------------------------------------------
# summarize

def test_summarize_sga_post_numbers(sga_runs):
    rc, out = call(SUMMARIZE, sga_runs["sdpa"], "--json")
    assert rc == 0
    j = json.loads(out)
    e = j["entropy"]
    assert (e["early_layer"], e["deep_layer"]) == (4, 40)
    assert e["H_early"] == pytest.approx(3.42) and e["H_deep"] == pytest.approx(0.87)
    assert e["collapse_pct"] == pytest.approx(100 * (1 - 0.87 / 3.42))
    assert j["loss"]["val_ppl"] == pytest.approx(21.1) and j["loss"]["loss"] == pytest.approx(2.0)
    assert j["task_acc"]["buckets"] == pytest.approx(
        {"depth 2": 0.87, "depth 3": 0.70, "depth 4": 0.548, "depth 5": 0.35, "depth 6": 0.221})
    rows = {r["layer"]: r for r in j["layers"]}
    assert rows["40"]["entropy"] == pytest.approx(0.87) and rows["40"]["head_var"] == pytest.approx(0.04)
    assert rows["48 (final)"]["resid_rank"] == pytest.approx(10.0)
    rc, md = call(SUMMARIZE, sga_runs["sdpa"])
    assert md_value(md, "entropy collapse layer 4 -> 40, % = 100 (1 - H_d/H_e)") == "74.6"
    assert md_value(md, "val perplexity = exp(val loss)") == "21.1"
    assert md_value(md, "depth 4") == "54.8"
    assert md_value(md, "40") == "0.87"        # per-layer table: entropy at layer 40


def test_summarize_sga_alpha_and_last_k(sga_runs):
    rc, out = call(SUMMARIZE, sga_runs["sga"], "--json", "--last-k", "2")
    j = json.loads(out)
    # Rows move linearly from 3.5 to the final profile over 5 trace rows: the mean of the last two
    # is the profile at 7/8 of the way.
    h4 = 3.5 + 0.875 * (3.42 - 3.5)
    h40 = 3.5 + 0.875 * (2.14 - 3.5)
    assert j["entropy"]["H_early"] == pytest.approx(h4) and j["entropy"]["H_deep"] == pytest.approx(h40)
    assert j["entropy"]["collapse_pct"] == pytest.approx(100 * (1 - h40 / h4))
    rc, out = call(SUMMARIZE, sga_runs["sga"], "--json")
    j = json.loads(out)
    alpha = interp_profile(SGA_ALPHA_48, 48)
    assert j["sga_alpha_early_third"] == pytest.approx(alpha[:16].mean())
    assert j["sga_alpha_deep_third"] == pytest.approx(alpha[32:].mean())
    rows = {r["layer"]: r for r in j["layers"]}
    assert rows["30"]["sga_alpha"] == pytest.approx(alpha[30]) and rows["47"]["gate_DC"] == pytest.approx(0.7)


def test_summarize_r3si_diagnostic(r3si_runs):
    rc, out = call(SUMMARIZE, r3si_runs["baseline"], "--json")
    e = json.loads(out)["entropy"]
    assert (e["l25"], e["l80"]) == (8, 26)
    assert e["var_l25"] == pytest.approx(4.7) and e["var_l80"] == pytest.approx(0.9)
    assert e["diag_ratio"] == pytest.approx(0.9 / 4.7) and e["diag_warning"] is True
    rc, md = call(SUMMARIZE, r3si_runs["baseline"])
    assert md_value(md, "R3SI diagnostic ratio Var(layer 26) / Var(layer 8)") == \
        "0.191  WARNING: below 0.25 (likely residual rank collapse, R3SI post)"
    rc, out = call(SUMMARIZE, r3si_runs["r3si"], "--json")
    j = json.loads(out)
    assert j["entropy"]["diag_ratio"] == pytest.approx(1.33 / 4.0) and j["entropy"]["diag_warning"] is False
    ck = {r["layer"]: r for r in j["checkpoint_layers"]}
    assert sorted(ck) == [14, 18, 22, 26]
    assert ck[26]["rank"] == pytest.approx(50.0) and ck[26]["alpha"] == pytest.approx((75 - 50) / 75)
    assert j["r3si"]["tau"] == pytest.approx(75.0)
    rc, md = call(SUMMARIZE, r3si_runs["r3si"])
    assert "WARNING" not in md and "R3SI on" in md


def test_summarize_without_traces_names_the_key(tmp_path):
    """A run with trace.every = 0: no rows of n/a, one line naming the key that turns traces on."""
    run = make_run(tmp_path / "bare", traces=False, task_acc=None)
    rc, md = call(SUMMARIZE, run)
    assert rc == 0
    assert "n/a" not in md
    assert "trace.every = 0" in md and "--set trace.every=N" in md
    assert "Attention entropy" not in md and "Per layer" not in md and "R3SI" not in md.replace("R3SI off", "")
    assert "traces off (trace.every = 0)" in md
    rc, out = call(SUMMARIZE, run, "--json")
    j = json.loads(out)
    assert j["entropy"]["collapse_pct"] is None and "/trace/attn_entropy" in j["missing"]
    assert any("trace.every" in n for n in j["notes"])
    # With traces on but no row yet, it says they are coming, not how to turn them on.
    run = make_run(tmp_path / "coming", traces=False)
    with h5py.File(run / "metrics.h5", "a") as f:
        f.attrs["config_json"] = json.dumps(nest({**em.parse_config(f.attrs["config"]), "trace.every": 50}))
    rc, md = call(SUMMARIZE, run)
    assert "No per-layer trace row yet (trace.every = 50" in md and "turns them off" not in md
    assert "Not in this file yet (the run's config says they will come): /trace/attn_entropy" in md


def test_summarize_shows_only_what_the_run_has(sga_runs, r3si_runs):
    """An SDPA run without R3SI: no R3SI table, no SGA rows, no n/a; an R3SI run: its own layers."""
    rc, md = call(SUMMARIZE, sga_runs["sdpa"])
    assert rc == 0 and "n/a" not in md
    assert "checkpoint layers" not in md and "R3SI monitor" not in md and "SGA alpha" not in md
    rc, md = call(SUMMARIZE, r3si_runs["r3si"])
    assert "Residual rank at the R3SI checkpoint layers" in md and "n/a" not in md
    rc, md = call(SUMMARIZE, sga_runs["sga"])
    assert md_value(md, "SGA alpha, mean over first third of layers") != ""


def test_r3si_layers_only_when_r3si_is_on(tmp_path):
    """The resolved config of a run without R3SI holds the default r3si.layers = [14, 18, 22, 26]:
    an 8-layer model has none of them. summarize, plot and compare use the layers the run has."""
    run = make_run(tmp_path / "tiny", L=8, H=4)
    r = em.RunData(run)
    assert r.cfg("r3si.layers") == [14, 18, 22, 26] and r.cfg("r3si.enabled") is False
    assert r.r3si_layers() is None and r.checkpoint_layers() == [] and em.r3si_summary(r) == {}
    rc, out = call(SUMMARIZE, run, "--json")
    j = json.loads(out)
    assert j["checkpoint_layers"] == [] and j["r3si"] is None
    assert [row["layer"] for row in j["layers"]] == [str(l) for l in range(8)] + ["8 (final)"]
    # plot: the residual-rank figure spans the model's 9 stream positions and marks no layer.
    rc, out = call(PLOT, run, "-o", tmp_path / "fig")
    drawn = PLOT.LAST_PLOTTER.drawn["resid_rank_vs_layer.png"]["/trace/resid_rank"]
    assert drawn["marks"] == [] and drawn["xlim"][1] < 9
    # compare: an R3SI run whose checkpoint blocks are 7, 9, 11, 13 (16 layers) and that baseline.
    r3 = make_run(tmp_path / "r3", L=16, H=4, r3si_layers=[7, 9, 11, 13], r3si={"rank": [20, 30, 40, 50]})
    assert em.RunData(r3).r3si_layers() == [7, 9, 11, 13]
    rc, md = call(COMPARE, r3, run, "--tables", "rank", "--csv", tmp_path / "csv")
    assert "resid rank L7" in md and "resid rank L13" in md and "L14" not in md and "L26" not in md
    rank = {row["run"]: row for row in read_csv(tmp_path / "csv" / "rank.csv")}
    assert float(rank["r3"]["rank_L7"]) == pytest.approx(em.RunData(r3).get("/trace/resid_rank")[-1][7])
    # No run with R3SI: the post's placement at each run's own depth, and the note says so.
    big = make_run(tmp_path / "big", L=32, H=4)
    rc, md = call(COMPARE, big, run, "--tables", "rank", "--csv", tmp_path / "csv2")
    assert "big: 14,18,22,26 of 32; tiny: 4,5,6,7 of 8" in md
    rank = {row["run"]: row for row in read_csv(tmp_path / "csv2" / "rank.csv")}
    assert float(rank["tiny"]["rank_at26of32"]) == pytest.approx(em.RunData(run).get("/trace/resid_rank")[-1][7])
    assert "R3SI tau" not in md


def test_uniform_causal_entropy_reference(tmp_path):
    """Uniform causal attention over T = 64 positions has mean row entropy ln(64!)/64 = 3.2058 nats
    (the tiny logic runs' 3.205 in every layer); the entropy plot draws it and can normalise by it."""
    assert em.uniform_causal_entropy(64) == pytest.approx(np.mean(np.log(np.arange(1, 65))), rel=1e-12)
    assert round(em.uniform_causal_entropy(64), 3) == 3.206 and round(em.uniform_causal_entropy(1), 12) == 0
    h = em.uniform_causal_entropy(64)
    run = make_run(tmp_path / "flat", L=4, H=2, seq_len=64, entropy=np.full(4, h), spread=np.zeros(4))
    rc, out = call(PLOT, run, "-o", tmp_path / "a")
    drawn = PLOT.LAST_PLOTTER.drawn["entropy_vs_layer.png"]
    assert drawn["reference"] == {64: pytest.approx(h)}
    assert drawn["lines"]["flat"][1] == pytest.approx([h] * 4)
    rc, out = call(PLOT, run, "-o", tmp_path / "b", "--normalize-entropy")
    drawn = PLOT.LAST_PLOTTER.drawn["entropy_vs_layer.png"]
    assert drawn["normalized"] and drawn["reference"] == {64: 1.0}
    assert drawn["lines"]["flat"][1] == pytest.approx([1.0] * 4)
    rc, md = call(SUMMARIZE, run)
    assert md_value(md, "uniform causal attention at T = 64") == "3.206"
    rc, out = call(SUMMARIZE, run, "--json")
    assert json.loads(out)["layers"][2]["entropy_rel"] == pytest.approx(1.0)


def test_grad_diversity_is_plotted(sga_runs, tmp_path):
    rc, out = call(PLOT, sga_runs["sdpa"], sga_runs["sga"], "-o", tmp_path)
    assert (tmp_path / "grad_diversity.png").stat().st_size > 10_000
    drawn = PLOT.LAST_PLOTTER.drawn["grad_diversity.png"]
    want = em.RunData(sga_runs["sdpa"]).get("/trace/grad_diversity")[-1]
    assert drawn["lines"]["sdpa"][0] == list(range(48)) and drawn["lines"]["sdpa"][1] == pytest.approx(want)


def test_locking_plain_h5py_and_rundata_in_one_process(tmp_path):
    """One locking mode: a file open in plain h5py (its defaults) reads through RunData in the same
    process, and so does one opened with an explicit locking=False."""
    run = make_run(tmp_path / "lock", L=2, H=2)
    with h5py.File(run / "metrics.h5", "r") as f:
        r = em.RunData(run, attempts=1)
        assert r.get("/steps/loss")[-1] == f["/steps/loss"][-1]
    with h5py.File(run / "metrics.h5", "r", locking=False) as f:
        r = em.RunData(run, attempts=1)
        assert r.get("/steps/loss")[-1] == f["/steps/loss"][-1]
    # and the other way round: RunData first (it closes the file), then plain h5py
    em.RunData(run)
    with h5py.File(run / "metrics.h5", "r") as f:
        assert f["/steps/step"].dtype == np.int64


def test_config_from_json_or_text(tmp_path):
    """config_json is what RunData reads; files from before it fall back to the libconfig text."""
    a = em.RunData(make_run(tmp_path / "a", L=6, H=2))
    b = em.RunData(make_run(tmp_path / "b", L=6, H=2, config_json=False))
    assert "config_json" in a.root and "config_json" not in b.root
    assert a.config == b.config and a.cfg("model.n_layer") == 6 and a.cfg("r3si.layers") == [14, 18, 22, 26]
    # The JSON alone is enough (no libconfig text to parse).
    with h5py.File(tmp_path / "a" / "metrics.h5", "a") as f:
        f.attrs["config"] = ""
    c = em.RunData(tmp_path / "a")
    assert c.config == a.config and c.n_layer == 6 and c.cfg("data.logic.depth_max") == 6


def test_bucket_labels(tmp_path):
    r = em.RunData(make_run(tmp_path / "ret", data="retrieval", task_acc=[0.9, 0.8, 0.7, 0.6]))
    assert r.bucket_labels() == ["distance 128", "distance 256", "distance 512", "distance 1024"]
    r = em.RunData(make_run(tmp_path / "lg", depth_min=3, task_acc=[0.9, 0.8]))
    assert r.bucket_labels() == ["depth 3", "depth 4"]
    r = em.RunData(make_run(tmp_path / "attr", task_acc=[0.9, 0.8],
                            extra_attrs={"/eval/task_acc": {"bucket_labels": np.array(["easy", "hard"], dtype=object)}}))
    assert r.bucket_labels() == ["easy", "hard"]
    assert em.task_accuracy(r) == (19.0, [("easy", 0.9), ("hard", 0.8)])


def test_partial_rows_and_layer_attributes(tmp_path):
    """A file caught between flushes (a longer step axis than a dataset, or the reverse) and a
    topology whose /r3si/rank has no axis attribute: rows pair up, layers come from the config."""
    run = make_run(tmp_path / "p", L=8, H=4, r3si_layers=[3, 5], r3si={"rank": [20, 30], "axis_attr": False})
    with h5py.File(run / "metrics.h5", "a") as f:
        d = f["/trace/step"]
        d.resize(d.shape[0] + 1, axis=0)
        d[-1] = 99.0                                         # a trace step whose rows are not there yet
        d = f["/trace/head_redundancy"]
        d.resize(d.shape[0] - 2, axis=0)                     # and a dataset two rows behind
    r = em.RunData(run)
    steps, v = r.series("/trace/head_redundancy")
    assert len(steps) == len(v) == 3 and steps[-1] == r.get("/trace/step")[2]
    steps, v = r.series("/trace/attn_entropy")
    assert len(steps) == 5 and steps[-1] == 19.0
    assert r.r3si_layers() == [3, 5]
    assert em.r3si_summary(r)["rank"] == {3: 20.0, 5: 30.0}
    rc, out = call(SUMMARIZE, run, "--json")
    assert rc == 0


WRITER = """
import os, sys, time
import h5py, numpy as np
path, n = sys.argv[1], int(sys.argv[2])
for k in range(n):
    while True:
        try:
            f = h5py.File(path, "a")
            break
        except OSError:          # a reader holds the lock: retry, like the trainer
            time.sleep(0.01)
    with f:
        for name, row in (("/steps/step", k), ("/steps/loss", 0.5 * k), ("/trace/step", k),
                          ("/trace/attn_entropy", np.full((4, 2), float(k)))):
            d = f[name]
            d.resize(k + 1, axis=0)
            d[k] = row
    time.sleep(0.02)   # ~8 s of appends: a reader that retries while the file changes gets many reads in
"""


def test_read_while_another_process_appends(tmp_path):
    """A writer appends rows (open, write, close, like the trainer's flushes) while we read: every
    read succeeds and holds only whole rows that pair up with their steps."""
    L, H = 4, 2
    ds = {"/steps/step": (np.zeros(0), "optimizer step (0-based)", "step"),
          "/steps/loss": (np.zeros(0), "training loss", "nats/token"),
          "/trace/step": (np.zeros(0), "trace step", "step"),
          "/trace/attn_entropy": (np.zeros((0, L, H)), "mean attention row entropy", "nats", "step,layer,head",
                                  {1: np.arange(L)})}
    path = write_metrics(tmp_path / "metrics.h5", ds, config_text(L, H))
    env = dict(os.environ, HDF5_USE_FILE_LOCKING="TRUE")      # the writer locks, as the trainer does
    proc = subprocess.Popen([PYTHON, "-c", WRITER, str(path), "400"], env=env)
    reads = 0
    try:
        while proc.poll() is None:
            r = em.RunData(path)
            s = r.series("/steps/loss")
            if s is None:                                       # no row yet
                continue
            st, loss = s
            np.testing.assert_array_equal(st, np.arange(len(st)))
            np.testing.assert_array_equal(loss, 0.5 * st)
            s = r.series("/trace/attn_entropy")
            if s is not None:
                np.testing.assert_array_equal(s[1], np.broadcast_to(s[0][:, None, None], s[1].shape))
            reads += 1
    finally:
        proc.wait(timeout=60)
    print(f"{reads} reads while the writer appended")
    assert proc.returncode == 0 and reads > 5, f"{reads} reads"
    assert len(em.RunData(path).get("/steps/step")) == 400


# ---------------------------------------------------------------------------------------------
# compare

def test_compare_sga_tables(sga_runs, tmp_path):
    rc, md = call(COMPARE, sga_runs["sdpa"], sga_runs["sga"], sga_runs["entropy-reg"], "--csv", tmp_path,
                  "--deep-range", "20:48")
    assert rc == 0
    main = {r["run"]: r for r in read_csv(tmp_path / "main.csv")}
    sdpa, sga, er = main["sdpa"], main["sga"], main["entropy-reg"]
    assert float(sdpa["collapse_pct"]) == pytest.approx(100 * (1 - 0.87 / 3.42))
    assert float(sga["collapse_pct"]) == pytest.approx(100 * (1 - 2.14 / 3.42))
    assert float(sga["retention_improvement_pp"]) == pytest.approx(100 * (2.14 - 0.87) / 3.42)   # 37.1
    assert float(er["retention_improvement_pp"]) == pytest.approx(100 * (1.31 - 0.87) / 3.42)    # 12.9
    assert float(sdpa["retention_improvement_pp"]) == 0.0
    assert float(sga["val_ppl"]) == pytest.approx(18.3) and float(sga["ppl_gain"]) == pytest.approx(2.8)
    assert float(er["ppl_gain"]) == pytest.approx(-0.6)
    assert float(sga["ppl_change_pct"]) == pytest.approx(100 * (18.3 - 21.1) / 21.1)
    assert (sga["early_layer"], sga["deep_layer"]) == ("4", "40")
    # Over layers 20..47, each against the run's own layer 4.
    p_sdpa, p_sga = interp_profile(SDPA_48, 48), interp_profile(SGA_48, 48)
    expect = np.mean(100 * (p_sga[20:48] - p_sdpa[20:48]) / 3.42)
    assert float(sga["retention_improvement_range_pp"]) == pytest.approx(expect)
    # Accuracy by depth: SGA post, depth 4: 71.3 vs 54.8 = +16.5 points.
    acc = {r["run"]: r for r in read_csv(tmp_path / "accuracy.csv")}
    assert float(acc["sga"]["acc_depth_4"]) == pytest.approx(71.3)
    assert float(acc["sga"]["acc_depth_4_change_pp"]) == pytest.approx(16.5)
    assert float(acc["sga"]["acc_depth_6_change_pp"]) == pytest.approx(43.7 - 22.1)
    ent = read_csv(tmp_path / "entropy_layers.csv")
    assert list(ent[0]) == ["layer", "sdpa", "sga", "entropy-reg"]
    assert float(ent[40]["sga"]) == pytest.approx(2.14) and float(ent[4]["sdpa"]) == pytest.approx(3.42)
    # The markdown carries the same numbers, rounded.
    assert "| sga " in md and "| 37.4 " in md and "| +37.1 " in md and "| +12.9 " in md and "| 2.8 " in md
    assert "| 71.3 " in md and "| +16.5 " in md


def test_compare_baseline_option(sga_runs, tmp_path):
    rc, md = call(COMPARE, sga_runs["sdpa"], sga_runs["sga"], "--baseline", "sga", "--csv", tmp_path,
                  "--tables", "main")
    main = {r["run"]: r for r in read_csv(tmp_path / "main.csv")}
    assert float(main["sdpa"]["retention_improvement_pp"]) == pytest.approx(-100 * (2.14 - 0.87) / 3.42)
    assert float(main["sga"]["ppl_gain"]) == 0.0
    assert not (tmp_path / "rank.csv").exists()
    with pytest.raises(SystemExit):
        call(COMPARE, sga_runs["sdpa"], "--baseline", "nope")


def test_compare_r3si_tables(r3si_runs, tmp_path):
    rc, md = call(COMPARE, r3si_runs["baseline"], r3si_runs["r3si"], "--csv", tmp_path, "--rank-layers", "8,24")
    rank = {r["run"]: r for r in read_csv(tmp_path / "rank.csv")}
    assert float(rank["r3si"]["rank_L24"]) == 89.0 and float(rank["baseline"]["rank_L24"]) == 41.0
    assert float(rank["r3si"]["rank_change_L24"]) == pytest.approx(100 * 48 / 41)    # +117 %
    assert float(rank["baseline"]["diag_ratio"]) == pytest.approx(0.9 / 4.7)
    assert rank["baseline"]["diag_warning"] == "WARNING < 0.25" and rank["r3si"]["diag_warning"] == "ok"
    assert float(rank["r3si"]["tau"]) == 75.0 and rank["baseline"]["tau"] == ""
    main = {r["run"]: r for r in read_csv(tmp_path / "main.csv")}
    assert float(main["r3si"]["ppl_change_pct"]) == pytest.approx(100 * (12.3 - 13.8) / 13.8)   # -10.9 %
    hv = read_csv(tmp_path / "head_var_layers.csv")
    assert float(hv[8]["baseline"]) == pytest.approx(4.7) and float(hv[26]["r3si"]) == pytest.approx(1.33)
    assert "+117.1" in md and "WARNING < 0.25" in md
    # Default rank layers: the r3si.layers of the run that has them.
    rc, md = call(COMPARE, r3si_runs["baseline"], r3si_runs["r3si"], "--tables", "rank")
    assert "resid rank L14" in md and "resid rank L26" in md


def test_compare_runs_of_different_depth(sga_runs, r3si_runs, tmp_path):
    """Runs of 48 and 32 layers: each run's default layers follow its own depth."""
    rc, md = call(COMPARE, sga_runs["sdpa"], r3si_runs["baseline"], "--csv", tmp_path, "--tables", "main")
    main = {r["run"]: r for r in read_csv(tmp_path / "main.csv")}
    assert (main["baseline"]["early_layer"], main["baseline"]["deep_layer"]) == ("3", "27")
    assert float(main["baseline"]["collapse_pct"]) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------
# plot

def test_plot_all_figures(sga_runs, r3si_runs, tmp_path):
    rc, out = call(PLOT, sga_runs["sdpa"], sga_runs["sga"], r3si_runs["r3si"], "-o", tmp_path)
    assert rc == 0
    names = {p.name for p in tmp_path.glob("*.png")}
    assert {"loss.png", "entropy_vs_layer.png", "heads_vs_layer.png", "resid_rank_vs_layer.png", "task_accuracy.png",
            "entropy_heatmap_sdpa.png", "entropy_heatmap_sga.png", "entropy_heatmap_r3si.png", "sga_sga.png",
            "attention_sga.png", "r3si_r3si.png"} <= names
    for p in tmp_path.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000, p.name
    assert "skipped SGA figure of sdpa: no /sga/alpha" in out
    assert "skipped R3SI figure of sga: no /r3si/rank" in out


# ---------------------------------------------------------------------------------------------
# A real short training run, read while it is written and after

# trace.every=0: this run is the one without traces (traces are on by default since issue 17).
TRAIN = ["train", "-c", "configs/tiny.cfg", "--set", "train.steps=4", "--set", "train.warmup_steps=1",
         "--set", "train.log_every=1", "--set", "trace.every=0"]   # a run without traces, whatever the default


LIVE_READS = []   # summarize's answers while the trainer was writing


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """The run of the issue's command; summarize runs against it while the trainer writes it."""
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: run `make` first")
    run_dir = tmp_path_factory.mktemp("real") / "run"
    proc = start_entrank(*TRAIN, "--run-dir", run_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    live = []
    while proc.poll() is None:
        if (run_dir / "metrics.h5").exists():
            live.append(run_script("summarize", run_dir, "--json"))
        time.sleep(0.3)
    out, err = proc.communicate()
    assert proc.returncode == 0, out + err
    LIVE_READS[:] = live
    return run_dir


def test_real_run_read_while_training(real_run):
    live = LIVE_READS
    for r in live:
        assert r.returncode == 0, r.stderr
        j = json.loads(r.stdout)
        assert j["run"]["n_layer"] == 8
    # At least one read while the trainer was still going (the run takes several seconds).
    assert any(not json.loads(r.stdout)["run"]["finished"] for r in live), [r.stdout[:200] for r in live]


def test_real_run_summarize(real_run):
    with h5py.File(real_run / "metrics.h5", "r") as f:
        loss = f["/steps/loss"][-1]
        step = f["/steps/step"][-1]
        val_loss = f["/eval/val_loss"][-1]
        acc = f["/eval/task_acc"][-1]
    r = run_script("summarize", real_run, "--json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["loss"]["loss"] == loss and j["loss"]["step"] == step == 3
    assert j["loss"]["val_ppl"] == pytest.approx(math.exp(val_loss), rel=1e-12)
    assert j["loss"]["val_ppl_stored"] == pytest.approx(j["loss"]["val_ppl"], rel=1e-9)
    assert j["task_acc"]["buckets"] == pytest.approx({"depth 1": acc[0], "depth 2": acc[1]})   # tiny.cfg: depths 1-2
    assert j["run"]["finished"] is True and j["run"]["n_layer"] == 8 and j["run"]["dp"] == 1
    assert j["entropy"]["collapse_pct"] is None and "/trace/attn_entropy" in j["missing"]
    r = run_script("summarize", real_run)
    assert r.returncode == 0 and f"| {loss:.6g}" in r.stdout
    # Only what the run has: no n/a rows, no R3SI table (R3SI off), the key that turns traces on.
    assert "n/a" not in r.stdout and "checkpoint layers" not in r.stdout and "trace.every = 0" in r.stdout


def test_real_run_compare_and_plot(real_run, sga_runs, tmp_path):
    rc, md = call(COMPARE, real_run, sga_runs["sdpa"], "--csv", tmp_path)
    assert rc == 0
    main = {r["run"]: r for r in read_csv(tmp_path / "main.csv")}
    with h5py.File(real_run / "metrics.h5", "r") as f:
        assert float(main["run"]["train_loss"]) == f["/steps/loss"][-1]
        assert float(main["run"]["val_ppl"]) == pytest.approx(math.exp(f["/eval/val_loss"][-1]))
    assert main["run"]["collapse_pct"] == "" and main["sdpa"]["retention_improvement_pp"] == ""
    acc = read_csv(tmp_path / "accuracy.csv")
    assert set(acc[0]) >= {"acc_depth_2", "acc_depth_3", "acc_depth_6"}
    r = run_script("plot", real_run, "-o", tmp_path / "fig", timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "fig").glob("*.png")) == ["loss.png", "task_accuracy.png"]
    assert "skipped entropy heat map of run: no /trace/attn_entropy" in r.stdout


def test_real_run_with_traces_and_snapshots(entrank, tmp_path):
    """A traced run with attention snapshots of blocks 1 and 6, end to end: summarize has no n/a,
    plot draws the snapshots of those blocks and the uniform reference for the run's T, compare
    writes markdown and CSV in one command."""
    run = tmp_path / "traced"
    entrank("train", "-c", "configs/tiny.cfg", "--set", "train.steps=3", "--set", "train.warmup_steps=1",
            "--set", "trace.every=2", "--set", "trace.snapshot_layers=[1, 6]", "--run-dir", run, check=0)
    r = em.RunData(run)
    T = r.cfg("model.seq_len")
    assert r.get("/snapshot/attn").shape == (1, 2, 4, T, T) and list(r.get("/snapshot/step")) == [0, 2]
    rc, md = call(SUMMARIZE, run)
    assert rc == 0 and "n/a" not in md and "Per layer" in md and "checkpoint layers" not in md
    rc, out = call(PLOT, run, "-o", tmp_path / "fig")
    drawn = PLOT.LAST_PLOTTER.drawn
    assert drawn["attention_traced.png"] == {"layers": [1, 6], "heads": 4, "step": 2.0}
    assert drawn["entropy_vs_layer.png"]["reference"] == {T: pytest.approx(em.uniform_causal_entropy(T))}
    assert (tmp_path / "fig" / "grad_diversity.png").exists()
    rc, out = call(COMPARE, run, "--md", tmp_path / "cmp" / "tables.md", "--csv", tmp_path / "cmp")
    text = (tmp_path / "cmp" / "tables.md").read_text()
    assert "### Language modelling and attention entropy" in text and "1->7 of 8" in text
    main = read_csv(tmp_path / "cmp" / "main.csv")[0]
    assert (main["early_layer"], main["deep_layer"]) == ("1", "7")
    assert float(main["H_deep"]) == pytest.approx(float(np.mean(r.get("/trace/attn_entropy")[-1][7])))


def test_resumed_run_is_described_by_its_current_config(entrank, tmp_path):
    """A finished 2-step run extended to 4 steps by a resume: the file's config (root attributes)
    is the resumed run's, so summarize does not report "4 of 2 steps"."""
    run = tmp_path / "ext"
    base = ["train", "-c", "configs/tiny.cfg", "--set", "train.warmup_steps=1", "--set", "trace.every=0", "--run-dir", run]
    entrank(*base, "--set", "train.steps=2", check=0)
    entrank(*base, "--set", "train.steps=4", check=0)
    r = em.RunData(run)
    assert r.cfg("train.steps") == 4 and list(r.get("/steps/step")) == [0, 1, 2, 3]
    rc, md = call(SUMMARIZE, run)
    assert "- progress: 4 of 4 steps done (finished)" in md


def test_real_run_pipeline_parallel(mpirun, tmp_path):
    """A file written by a dp 1 x pp 2 run reads like any other."""
    run = tmp_path / "pp2"
    mpirun(2, "train", "-c", "configs/tiny.cfg", "--set", "train.steps=2", "--set", "train.warmup_steps=1",
           "--set", "parallel.pp=2", "--set", "model.seq_len=64", "--set", "train.micro_batch_size=8",
           "--set", "eval.batches=1", "--run-dir", run, check=0, timeout=300)
    rc, out = call(SUMMARIZE, run, "--json")
    j = json.loads(out)
    with h5py.File(run / "metrics.h5", "r") as f:
        assert j["loss"]["loss"] == f["/steps/loss"][-1]
        assert j["loss"]["val_ppl"] == pytest.approx(math.exp(f["/eval/val_loss"][-1]))
    assert (j["run"]["dp"], j["run"]["pp"], j["run"]["n_layer"], j["run"]["last_step"]) == (1, 2, 8, 1)
    rc, md = call(SUMMARIZE, run)
    assert "dp 1 x pp 2" in md


@pytest.mark.parametrize("script", ["summarize", "compare", "plot"])
def test_help(script):
    r = run_script(script, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout
    if script != "plot":
        assert "100 (1 - H_d / H_e)" in r.stdout or "100 (1 - H_deep / H_early)" in r.stdout
        assert "0.25" in r.stdout


def test_missing_run_is_a_clear_error(tmp_path):
    r = run_script("summarize", tmp_path / "nope")
    assert r.returncode == 2 and "no such file" in r.stderr
