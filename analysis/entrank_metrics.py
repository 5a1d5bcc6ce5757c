"""entrank_metrics: reading an entrank run's metrics.h5 and the quantities of the two source posts.

Shared by the commands `analysis/summarize`, `analysis/compare` and `analysis/plot`
(docs/metrics-schema.md gives the file's schema). Everything here works on a run that is still
being written and on files from any dp x pp topology: the file is opened, read into numpy and
closed at once (retrying while the trainer holds it), every dataset is paired with its group's step
axis up to the shorter of the two (a flush may be half-way), and a dataset that is not there yet
makes the quantity that needs it None, never an error; the commands leave such quantities out.

File locking: one mode, h5py's default (HDF5's: locking on; HDF5_USE_FILE_LOCKING, when set,
applies to every open of the process alike). A RunData therefore opens a file the way a plain
h5py.File does, and both can be used on one file in one process (HDF5 refuses a second open of a
file with other locking flags than the first: "file locking flag values don't match"). While the
trainer flushes, a read fails and is retried; while we read, the trainer's flush waits or keeps its
rows queued for the next one (src/metrics.h).

What the run has: per-layer traces only when trace.every > 0; R3SI's checkpoint layers only when
r3si.enabled, read from the file (/r3si/rank's layer axis), never from the config default of a run
without R3SI. The resolved config comes from the root attribute `config_json` (plain JSON), or
for files from before it, from the libconfig text in `config`.

Uniform causal attention (the reference line of the entropy plots): query i of T sees i+1 keys,
so a uniform row has entropy ln(i+1) and the mean over rows is
      H_uniform(T) = (1/T) sum_{i=0}^{T-1} ln(i+1) = ln(T!) / T      (T = 64: 3.2058 nats)
An attention entropy equal to it in every layer means the maps are exactly uniform.

Definitions (H_l = mean over heads of /trace/attn_entropy at layer l, at the last trace row, or
averaged over the last k trace rows; layers are the 0-based block indices stored in the dataset's
`axis1_layer` attribute, or 0..L-1; the posts' layer numbers are read as such indices, and a layer
"at fraction f of depth" is l_f = min(L-1, floor(f L + 1/2)): 4/48 and 40/48 of 48 layers give the
SGA post's layers 4 and 40, 25% and 80% of 32 give the R3SI post's layers 8 and 26):

  entropy collapse between an early layer e and a deep layer d (SGA post):
      collapse % = 100 (1 - H_d / H_e)
      (3.42 nats at layer 4 -> 0.87 nats at layer 40 is 74.6 %; 3.42 -> 2.14 is 37.4 %)
  entropy retention:
      retention = H_d / H_e = 1 - collapse / 100
  retention improvement of a run over a baseline, in percentage points:
      improvement = 100 (retention_run - retention_base) = collapse_base % - collapse_run %
      With the post's layer-40 numbers this is 74.6 - 37.4 = 37.2 points for SGA and
      74.6 - 61.7 = 12.9 points for entropy regularisation (1.31 nats). The post writes "34" and
      "14": no single formula of its own numbers gives both (see retention_improvement), so we
      implement the reading that fits both best. The post's 34 is stated "across layers 20 to 48";
      given a layer range, the improvement is the mean over its deep layers of the per-layer values.
  R3SI diagnostic ratio (R3SI post: "variance ratio below 0.25 (layer 26 variance divided by layer
  8 variance)", layers "at approximately 25% depth" and "approximately 80% depth"):
      ratio = Var_h(E_{l80,h}) / Var_h(E_{l25,h}),   l_f = min(L-1, floor(f L + 1/2))
      E_{l,h} = /trace/attn_entropy (mean row entropy of head h, nats), Var = population variance
      over heads (ddof 0). For 32 layers l80 = 26 and l25 = 8, the post's layers. Below 0.25 the
      post says the model is "likely experiencing meaningful rank collapse": we print a warning.
      (The post's baseline: 0.9 / 4.7 = 0.19.)
  relative change of a quantity over a baseline: 100 (run - base) / base
      (R3SI post: perplexity 13.8 -> 12.3 is -10.9 %, LogiQA 53.1 -> 58.4 is +10.0 %,
      residual rank 41 -> 89 is +117 %); perplexity difference in points: base - run (SGA post:
      21.1 - 18.3 = 2.8); accuracy difference in percentage points (SGA post: 71.3 - 54.8 = 16.5).
  head redundancy, residual rank, attention effective rank, token cosine, gradient diversity, SGA
  alpha and gate bands, R3SI tau/rho/rank/alpha: read from /trace, /sga and /r3si as written.
"""
import csv
import io
import json
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np  # noqa: E402

try:
    import h5py  # noqa: E402
except ImportError as exc:  # pragma: no cover - depends on the interpreter
    raise SystemExit(f"entrank analysis: h5py is missing from {sys.executable} ({exc}); "
                     "run the scripts with /usr/bin/python3 (Debian's python3-h5py)") from exc

# Where a dataset's rows come from: each group's step axis (/sga has its own since the snapshot
# change; files from before pair /sga with /trace/step).
STEP_AXIS = {"steps": "/steps/step", "eval": "/eval/step", "trace": "/trace/step", "sga": "/trace/step",
             "r3si": "/r3si/step", "snapshot": "/snapshot/step"}
# Datasets that are axis values (HDF5 dimension scales), not per-step rows.
AXIS_NAMES = ("layer", "stream", "head", "batch", "stat", "band", "query", "key")

R3SI_DEFAULT_FRACS = (14 / 32, 18 / 32, 22 / 32, 26 / 32)   # the post's checkpoint layers 14,18,22,26 of 32
SGA_EARLY_FRAC, SGA_DEEP_FRAC = 4 / 48, 40 / 48              # the SGA post's layers 4 and 40 of 48
R3SI_EARLY_FRAC, R3SI_LATE_FRAC = 0.25, 0.80                 # the R3SI diagnostic's depths
DIAGNOSTIC_WARN = 0.25
GATE_BANDS = ("DC", "low", "mid", "high")
SGA_STATS = ("DC fraction", "centroid", "flatness", "spectral entropy")


# ---------------------------------------------------------------------------------------------
# libconfig text (the resolved config stored in the root attribute `config`)

_TOKEN = re.compile(r"""
    (?P<ws>\s+) | (?P<comment>//[^\n]*|\#[^\n]*|/\*.*?\*/) |
    (?P<string>"(?:[^"\\]|\\.)*") |
    (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)L{0,2}) |
    (?P<name>[A-Za-z*][-A-Za-z0-9_*]*) | (?P<punct>[=:;,{}\[\]()])
""", re.VERBOSE | re.DOTALL)


def _tokens(text):
    pos, out = 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"config text: unexpected {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        out.append((kind, m.group()))
    return out


def parse_config(text):
    """Flattens libconfig text into {"model.n_layer": 8, "r3si.layers": [14, 18], ...}. Tolerant:
    what was parsed before an error is kept."""
    flat = {}
    if not text:
        return flat
    try:
        toks = _tokens(text)
    except ValueError:
        return _parse_config_loose(text)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else (None, None)

    def take():
        nonlocal pos
        tok = peek()
        pos += 1
        return tok

    def scalar(kind, val):
        if kind == "string":
            return bytes(val[1:-1], "utf-8").decode("unicode_escape")
        if kind == "number":
            v = val.rstrip("L")
            if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", v):
                return int(v, 16)
            return int(v) if re.fullmatch(r"[-+]?\d+", v) else float(v)
        if kind == "name" and val.lower() in ("true", "false"):
            return val.lower() == "true"
        raise ValueError(f"config text: bad value {val!r}")

    def value(prefix):
        kind, val = take()
        if val == "{":
            settings(prefix, "}")
            return None
        if val in ("[", "("):
            close = "]" if val == "[" else ")"
            items = []
            while peek()[1] != close:
                if peek()[0] is None:
                    raise ValueError("config text: unterminated list")
                items.append(value(None))
                if peek()[1] == ",":
                    take()
            take()
            return items
        v = scalar(kind, val)
        while kind == "string" and peek()[0] == "string":  # adjacent literals concatenate
            v += scalar(*take())
        return v

    def settings(prefix, close):
        while peek()[0] is not None and peek()[1] != close:
            kind, name = take()
            if kind != "name":
                raise ValueError(f"config text: expected a name, got {name!r}")
            if peek()[1] not in ("=", ":"):
                raise ValueError(f"config text: expected = after {name}")
            take()
            key = f"{prefix}.{name}" if prefix else name
            v = value(key)
            if v is not None:
                flat[key] = v
            while peek()[1] in (";", ","):
                take()
        if close is not None:
            take()

    try:
        settings("", None)
    except (ValueError, IndexError, TypeError):
        pass
    return flat


def _parse_config_loose(text):
    """Fallback for text the tokenizer rejects: `name = scalar;` lines inside `group = {` blocks."""
    flat, stack = {}, []
    for line in text.splitlines():
        line = line.split("//")[0].strip()
        m = re.match(r"([A-Za-z][-\w]*)\s*[=:]\s*\{", line)
        if m:
            stack.append(m.group(1))
            continue
        if line.startswith("}"):
            if stack:
                stack.pop()
            continue
        m = re.match(r"([A-Za-z][-\w]*)\s*[=:]\s*(.+?);?$", line)
        if m:
            key = ".".join(stack + [m.group(1)])
            flat[key] = parse_config(f"x = {m.group(2)};").get("x", m.group(2))
    return flat


# ---------------------------------------------------------------------------------------------
# Reading a run

class RunData:
    """Everything read from one metrics.h5, as numpy arrays, the file already closed."""

    def __init__(self, path, name=None, snapshot_row=-1, attempts=20, delay=0.25):
        path = Path(path)
        self.h5path = path / "metrics.h5" if path.is_dir() else path
        self.run_dir = self.h5path.parent
        self.name = name or self.run_dir.name
        self.data, self.attrs, self.root = {}, {}, {}
        self.snapshot_row = None
        self._read(snapshot_row, attempts, delay)
        text = self.root.get("config", "")
        if not text and (self.run_dir / "config.cfg").is_file():
            text = (self.run_dir / "config.cfg").read_text(errors="replace")
        self.config_text = text
        self.config = None
        js = self.root.get("config_json")
        if js:
            try:
                self.config = flatten_config(json.loads(js))
            except ValueError:
                self.config = None
        if self.config is None:
            self.config = parse_config(text)

    def _read(self, snapshot_row, attempts, delay):
        if not self.h5path.exists():
            raise FileNotFoundError(f"{self.h5path}: no such file (is this a run directory?)")
        last = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(delay)
            data, attrs, root = {}, {}, {}
            try:
                before = _stamp(self.h5path)
                with open_h5(self.h5path) as f:
                    root = {k: _attr(v) for k, v in f.attrs.items()}
                    names = []
                    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
                    snap_row = None
                    for n in names:
                        ds = f[n]
                        key = "/" + n
                        attrs[key] = {k: _attr(v) for k, v in ds.attrs.items()}
                        if key.startswith("/snapshot/") and ds.ndim >= 3:
                            # Snapshots are big (fp16 T x T maps): read one row only.
                            if ds.shape[0] == 0:
                                data[key] = np.zeros((0,) + ds.shape[1:], dtype=np.float32)
                                continue
                            r = snapshot_row if snapshot_row >= 0 else ds.shape[0] + snapshot_row
                            r = min(max(r, 0), ds.shape[0] - 1)
                            snap_row = r
                            data[key] = np.asarray(ds[r:r + 1], dtype=np.float32)
                        else:
                            data[key] = np.asarray(ds[()])
                self.data, self.attrs, self.root, self.snapshot_row = data, attrs, root, snap_row
                # Without the lock a flush may have landed during the read: read again, unless the
                # file keeps changing (then this read, paired row by row, is as good as any).
                if _stamp(self.h5path) == before or attempt >= min(attempts, 5) - 1:
                    return
                last = "the file changed while it was read"
                continue
            except (OSError, RuntimeError, KeyError, ValueError) as exc:  # locked, or caught mid-flush
                last = exc
                # Not HDF5 at all: only a file being created right now is worth a few more tries.
                if "signature" in str(exc) and attempt >= 2:
                    break
        raise OSError(f"{self.h5path}: cannot read: {last}")

    # -- access -------------------------------------------------------------------------------
    def has(self, name):
        return name in self.data and self.data[name].size > 0

    def get(self, name):
        return self.data.get(name)

    def series(self, name):
        """(steps, values) of a dataset, cut to the length its group's step axis shares with it.
        Without a step axis the row number stands in. None if absent or empty."""
        v = self.data.get(name)
        if v is None or v.shape[0] == 0:
            return None
        group = name.strip("/").split("/")[0]
        step_name = STEP_AXIS.get(group)
        own = self.data.get(f"/{group}/step")
        # The group's own step axis, unless it is shorter than the rows (a file from before /sga had
        # one, resumed by a trainer that writes it: the older rows pair with /trace/step).
        if own is not None and (step_name is None or step_name == f"/{group}/step" or len(own) >= v.shape[0]):
            step_name = f"/{group}/step"
        steps = self.data.get(step_name) if step_name else None
        if name.startswith("/snapshot/") and v.ndim >= 3:
            s = self.data.get("/snapshot/step")
            st = np.array([s[self.snapshot_row]]) if s is not None and self.snapshot_row is not None \
                and self.snapshot_row < len(s) else np.array([np.nan])
            return st, v
        if steps is None or step_name == name:
            return np.arange(v.shape[0], dtype=float) if steps is None else steps, v
        n = min(len(steps), v.shape[0])
        if n == 0:
            return None
        return steps[:n], v[:n]

    def last_rows(self, name, k=1):
        """Mean over the last k rows (NaN-aware) and the step of the last one; None if absent."""
        s = self.series(name)
        if s is None:
            return None
        steps, v = s
        k = max(1, min(int(k), v.shape[0]))
        rows = v[-k:]
        with warnings.catch_warnings():  # an all-NaN column (an empty bucket) stays NaN, quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(rows, axis=0) if np.issubdtype(rows.dtype, np.floating) else rows.mean(axis=0)
        return float(steps[-1]), mean

    def layer_index(self, name, axis=1):
        """Layer indices of a dataset's axis (attribute axis<k>_layer, or axis<k>_stream for the
        L+1 stream positions; files from before: `layers`), else 0..n-1."""
        v = self.data.get(name)
        if v is None or v.ndim <= axis:
            return None
        at = self.attrs.get(name, {})
        for key in (f"axis{axis}_layer", f"axis{axis}_stream", "layers" if axis == 1 else None):
            a = at.get(key) if key else None
            if a is not None:
                a = np.atleast_1d(np.asarray(a)).astype(int)
                if len(a) == v.shape[axis]:
                    return a
        return np.arange(v.shape[axis])

    def cfg(self, key, default=None):
        return self.config.get(key, default)

    # -- derived facts ---------------------------------------------------------------------------
    @property
    def n_layer(self):
        n = self.cfg("model.n_layer")
        if isinstance(n, int) and not isinstance(n, bool):
            return n
        for name in ("/trace/attn_entropy", "/trace/head_redundancy", "/sga/alpha"):
            li = self.layer_index(name)
            if li is not None:
                return int(li.max()) + 1
        return None

    @property
    def r3si_enabled(self):
        """R3SI was on: the config says so, or the file has the monitor's datasets."""
        return self.cfg("r3si.enabled") is True or "/r3si/rank" in self.data

    def r3si_layers(self):
        """The run's R3SI checkpoint layers, from the file (/r3si/rank's layer axis: attribute
        axis1_layer or the /r3si/layer scale), else the config's r3si.layers; None when R3SI was
        off (its r3si.layers is only the schema default then, not layers the run has)."""
        if not self.r3si_enabled:
            return None
        n = self.data["/r3si/rank"].shape[1] if "/r3si/rank" in self.data and self.data["/r3si/rank"].ndim == 2 else None
        for a in (self.attrs.get("/r3si/rank", {}).get("axis1_layer"), self.data.get("/r3si/layer")):
            if a is not None:
                a = [int(x) for x in np.atleast_1d(a)]
                if n is None or len(a) == n:
                    return a
        v = self.cfg("r3si.layers")
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v]
        if isinstance(v, list) and v and (n is None or len(v) == n):
            return [int(x) for x in v]
        return list(range(n)) if n else None

    def checkpoint_layers(self):
        """The layers where R3SI measures residual rank: the run's checkpoint layers, or [] without R3SI."""
        return self.r3si_layers() or []

    @property
    def seq_len(self):
        """T of the traces: model.seq_len, else the snapshot maps' size."""
        T = self.cfg("model.seq_len")
        if isinstance(T, int) and not isinstance(T, bool) and T > 0:
            return T
        a = self.data.get("/snapshot/attn")
        return int(a.shape[-1]) if a is not None and a.ndim >= 2 else None

    @property
    def trace_every(self):
        v = self.cfg("trace.every")
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    def trace_note(self):
        """Why a file has no per-layer traces, naming the key that turns them on; None if it has them."""
        if self.has("/trace/attn_entropy"):
            return None
        every = self.trace_every
        if every is not None and every > 0:
            return (f"No per-layer trace row yet (trace.every = {every}: rows come at steps 0, {every}, "
                    f"{2 * every}, ... and reach the file at the next flush).")
        return ("No per-layer traces in this run: trace.every = 0 turns them off. Set trace.every = N (config file, "
                "or --set trace.every=N) to record attention entropy, head redundancy, residual rank and gradient "
                "diversity every N steps.")

    def bucket_labels(self, n=None):
        """Labels of /eval/task_acc's columns: attribute bucket_labels, else from the config."""
        acc = self.data.get("/eval/task_acc")
        if n is None:
            n = acc.shape[1] if acc is not None and acc.ndim == 2 else 0
        a = self.attrs.get("/eval/task_acc", {}).get("bucket_labels")
        if a is not None:
            labels = [str(x) for x in np.atleast_1d(a)]
            if len(labels) == 1 and n > 1 and "," in labels[0]:
                labels = [s.strip() for s in labels[0].split(",")]
            if len(labels) == n:
                return labels
        kind = self.cfg("data.kind")
        if kind == "logic":
            d0 = self.cfg("data.logic.depth_min", 2)
            return [f"depth {d0 + b}" for b in range(n)]
        if kind == "retrieval":
            dist = self.cfg("data.retrieval.distances", [128, 256, 512, 1024])
            dist = dist if isinstance(dist, list) else [dist]
            if len(dist) == n:
                return [f"distance {d}" for d in dist]
        return [f"bucket {b}" for b in range(n)]

    def progress(self):
        """(last step, planned steps or None, tokens, finished?)."""
        s = self.data.get("/steps/step")
        last = float(s[-1]) if s is not None and len(s) else None
        tok = self.data.get("/steps/tokens")
        tokens = float(tok[-1]) if tok is not None and len(tok) else None
        planned = self.cfg("train.steps")
        if not planned:
            t = self.cfg("train.tokens")
            bs, T = self.cfg("train.batch_size"), self.cfg("model.seq_len")
            planned = math.ceil(t / (bs * T)) if t and bs and T else None
        finished = planned is not None and last is not None and last + 1 >= planned
        return last, planned, tokens, finished


LOCKING_MISMATCH = "file locking flag values don't match"


def open_h5(path):
    """Opens for reading in the project's one locking mode: h5py's default (see the module text),
    the mode of a plain h5py.File(path, "r"). If this process already holds the file open with
    an explicit other mode (h5py.File(..., locking=False) in a notebook), HDF5 shares that open
    file only under the same flags: then we open it the way it is already open."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        if LOCKING_MISMATCH not in str(exc):
            raise
        last = exc
    for locking in (False, True):
        try:
            return h5py.File(path, "r", locking=locking)
        except TypeError:       # h5py < 3.5 has no locking argument
            break
        except OSError as exc:
            if LOCKING_MISMATCH not in str(exc):
                raise
            last = exc
    raise last


def flatten_config(tree, prefix=""):
    """{"model": {"n_layer": 8}} -> {"model.n_layer": 8}: the config_json attribute in the keys of
    parse_config."""
    flat = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            flat.update(flatten_config(v, key))
        else:
            flat[key] = v
    return flat


def _stamp(path):
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def _attr(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.dtype.kind in ("S", "O"):
        return np.array([x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v.ravel()],
                        dtype=object).reshape(v.shape)
    if isinstance(v, np.generic):
        return v.item()
    return v


def load_runs(paths, names=None):
    runs = []
    names = list(names) if names else []
    for i, p in enumerate(paths):
        runs.append(RunData(p, name=names[i] if i < len(names) else None))
    # Distinct names: add parent directories until the names differ, then a counter.
    def dups():
        seen = {}
        for r in runs:
            seen.setdefault(r.name, []).append(r)
        return [rs for rs in seen.values() if len(rs) > 1]

    for depth in range(1, 4):
        if not dups():
            break
        for rs in dups():
            for r in rs:
                if names and r.name in names:
                    continue
                parts = [p for p in r.run_dir.resolve().parts if p != "/"]
                r.name = "/".join(parts[-(depth + 1):])
    for rs in dups():
        for i, r in enumerate(rs[1:], start=2):
            r.name = f"{r.name} ({i})"
    return runs


# ---------------------------------------------------------------------------------------------
# Formulas (pure functions: tested on the posts' numbers)

def uniform_causal_entropy(T):
    """Mean over the T query rows of the entropy of uniform causal attention: (1/T) sum ln(i+1) =
    ln(T!)/T nats. T = 64: 3.2058; T = 1024: 5.94."""
    if not T or T < 1:
        return None
    return math.lgamma(T + 1) / T


def r3si_post_layers(n_layer):
    """The R3SI post's checkpoint placement (14, 18, 22, 26 of 32) scaled to n_layer layers, for
    comparing runs none of which has R3SI."""
    return sorted({layer_at(f, n_layer) for f in R3SI_DEFAULT_FRACS})


def layer_at(frac, n_layer):
    """The layer at a fraction of depth: min(L-1, floor(frac L + 1/2)). 4/48 -> 4, 0.8 of 32 -> 26."""
    return int(min(n_layer - 1, max(0, math.floor(frac * n_layer + 0.5))))


def collapse_pct(h_early, h_deep):
    """Entropy collapse in percent: 100 (1 - H_deep / H_early)."""
    if not _finite(h_early, h_deep) or h_early == 0:
        return None
    return 100.0 * (1.0 - h_deep / h_early)


def retention(h_early, h_deep):
    """Entropy retention: H_deep / H_early (= 1 - collapse/100)."""
    if not _finite(h_early, h_deep) or h_early == 0:
        return None
    return h_deep / h_early


def retention_improvement(collapse_base, collapse_run):
    """Retention improvement of a run over a baseline in percentage points:
    100 (retention_run - retention_base) = collapse_base - collapse_run (both in percent).
    Arguments may be arrays (one value per deep layer): the result is their mean, the post's
    "improvement in retention across layers 20 to 48".
    Post's layer-40 numbers: 74.6 - 37.4 = 37.2 (SGA), 74.6 - 61.7 = 12.9 (entropy reg.); the post
    prints 34 and 14, which no one formula of these numbers reproduces together."""
    cb = np.asarray(collapse_base, dtype=float)
    cr = np.asarray(collapse_run, dtype=float)
    d = cb - cr
    if d.size == 0 or not np.isfinite(d).any():
        return None
    return float(np.nanmean(d))


def rel_change_pct(base, run):
    """100 (run - base) / base."""
    if not _finite(base, run) or base == 0:
        return None
    return 100.0 * (run - base) / base


def diff(base, run):
    if not _finite(base, run):
        return None
    return run - base


def head_variance(per_head):
    """Population variance over heads (ddof 0) of a layer's per-head entropies (NaN ignored)."""
    v = np.asarray(per_head, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.var(v)) if v.size else None


def diagnostic_ratio(var_late, var_early):
    """R3SI diagnostic: Var(layer at 80% depth) / Var(layer at 25% depth); warn below 0.25."""
    if not _finite(var_late, var_early) or var_early == 0:
        return None
    return var_late / var_early


def _finite(*xs):
    return all(x is not None and isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(x)
               for x in xs)


# ---------------------------------------------------------------------------------------------
# Quantities of one run

def per_layer(run, name, k=1):
    """{layer: row value} of an [n, L, ...] dataset at the last row (mean of last k), or None."""
    r = run.last_rows(name, k)
    if r is None:
        return None
    step, row = r
    layers = run.layer_index(name)
    return step, {int(l): row[i] for i, l in enumerate(layers)}


def entropy_by_layer(run, k=1):
    """(step, {layer: mean over heads}, {layer: per-head array}) from /trace/attn_entropy."""
    r = per_layer(run, "/trace/attn_entropy", k)
    if r is None:
        return None
    step, rows = r
    mean = {l: _nanmean(v) for l, v in rows.items()}
    return step, mean, rows


def _nanmean(v):
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def resolve_layer(spec, n_layer):
    """A layer given as an index ("40") or a depth fraction ("0.8" or "80%")."""
    if spec is None:
        return None
    s = str(spec).strip()
    if s.endswith("%"):
        return layer_at(float(s[:-1]) / 100.0, n_layer)
    if re.fullmatch(r"-?\d+", s):
        i = int(s)
        return i + n_layer if i < 0 else i
    f = float(s)
    return layer_at(f, n_layer) if 0 <= f <= 1 else int(f)


def parse_range(spec, n_layer):
    """"20:48" -> [20..47] (end exclusive, clipped to the model), or "20,30,40"."""
    if spec is None:
        return None
    s = str(spec)
    if ":" in s:
        a, b = s.split(":", 1)
        a = int(a) if a else 0
        b = int(b) if b else n_layer
        return list(range(max(0, a), min(n_layer, b)))
    return [int(x) for x in s.split(",") if x.strip()]


def entropy_summary(run, k=1, early=None, deep=None):
    """Entropies, collapse and the R3SI diagnostic of one run (None where data is missing)."""
    L = run.n_layer
    out = {"early_layer": None, "deep_layer": None, "H_early": None, "H_deep": None, "collapse_pct": None,
           "trace_step": None, "l25": None, "l80": None, "var_l25": None, "var_l80": None, "diag_ratio": None,
           "diag_warning": None, "collapse_by_layer": {}, "entropy": {}, "head_var": {}}
    if L:
        out["early_layer"] = resolve_layer(early, L) if early is not None else layer_at(SGA_EARLY_FRAC, L)
        out["deep_layer"] = resolve_layer(deep, L) if deep is not None else layer_at(SGA_DEEP_FRAC, L)
        out["l25"], out["l80"] = layer_at(R3SI_EARLY_FRAC, L), layer_at(R3SI_LATE_FRAC, L)
    e = entropy_by_layer(run, k)
    if e is None:
        return out
    step, mean, heads = e
    out["trace_step"] = step
    out["entropy"] = mean
    out["head_var"] = {l: head_variance(v) for l, v in heads.items()}
    he = mean.get(out["early_layer"])
    hd = mean.get(out["deep_layer"])
    out["H_early"], out["H_deep"] = he, hd
    out["collapse_pct"] = collapse_pct(he, hd)
    out["collapse_by_layer"] = {l: collapse_pct(he, h) for l, h in mean.items()}
    out["var_l25"], out["var_l80"] = out["head_var"].get(out["l25"]), out["head_var"].get(out["l80"])
    out["diag_ratio"] = diagnostic_ratio(out["var_l80"], out["var_l25"])
    if out["diag_ratio"] is not None:
        out["diag_warning"] = out["diag_ratio"] < DIAGNOSTIC_WARN
    return out


def loss_summary(run, k=10):
    out = {}
    s = run.series("/steps/loss")
    if s is not None:
        steps, loss = s
        out["step"] = float(steps[-1])
        out["loss"] = float(loss[-1])
        out["loss_mean_k"] = float(np.nanmean(loss[-k:]))
        out["k"] = min(k, len(loss))
    for name in ("lm_loss", "aux_loss", "lsd", "lr", "grad_norm", "tokens"):
        s = run.series(f"/steps/{name}")
        if s is not None:
            out[name] = float(s[1][-1])
    for name in ("tokens_per_s", "step_ms", "mfu"):
        s = run.series(f"/steps/{name}")
        if s is not None:
            out[name] = float(np.nanmedian(s[1][-k:]))
    s = run.series("/eval/val_loss")
    if s is not None:
        out["eval_step"] = float(s[0][-1])
        out["val_loss"] = float(s[1][-1])
        out["val_ppl"] = math.exp(out["val_loss"]) if out["val_loss"] < 700 else float("inf")
        p = run.series("/eval/val_ppl")
        if p is not None:
            out["val_ppl_stored"] = float(p[1][-1])
    return out


def task_accuracy(run):
    """(eval step, [(label, accuracy)]) of the last /eval/task_acc row, or None."""
    s = run.series("/eval/task_acc")
    if s is None:
        return None
    steps, acc = s
    row = np.atleast_1d(acc[-1])
    labels = run.bucket_labels(len(row))
    return float(steps[-1]), list(zip(labels, [float(x) for x in row]))


def r3si_summary(run):
    out = {}
    if not run.r3si_enabled:
        return out
    for name in ("tau", "rho"):
        s = run.series(f"/r3si/{name}")
        if s is not None:
            out["step"] = float(s[0][-1])
            out[name] = float(s[1][-1])
    layers = run.r3si_layers()
    for name in ("rank", "alpha", "inject_ratio"):
        s = run.series(f"/r3si/{name}")
        if s is not None:
            out["step"] = float(s[0][-1])
            row = np.atleast_1d(s[1][-1])
            ls = layers if layers and len(layers) == len(row) else list(range(len(row)))
            out[name] = dict(zip(ls, [float(x) for x in row]))
    return out


# ---------------------------------------------------------------------------------------------
# Tables

def fmt(x, spec=".4g"):
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return "yes" if x else "no"
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(xf):
        return "n/a"
    if xf == 0:
        xf = 0.0  # no "-0"
    if spec == "int":
        return str(int(round(xf)))
    out = f"{xf:+.1f}" if spec == "+" else format(xf, spec)
    if re.fullmatch(r"[-+]0(\.0*)?", out):   # a tiny value rounded to zero prints as zero, unsigned
        out = out[1:]
    return out


class Table:
    """Rows of values under named columns: markdown for people, CSV (full precision) for tools."""

    def __init__(self, title, columns, rows, note=None, empty="n/a"):
        self.title = title
        self.columns = columns          # [(key, header, fmt spec)]
        self.rows = rows                # [dict]
        self.note = note
        self.empty = empty              # a cell without a value (e.g. "" where a column does not apply)

    def markdown(self):
        heads = [h for _, h, _ in self.columns]
        body = [[(self.empty if (r.get(k) is None or (isinstance(r.get(k), float) and math.isnan(r.get(k))))
                  else fmt(r.get(k), f)) for k, _, f in self.columns] for r in self.rows]
        w = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(heads)]
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(heads)) + " |")
        lines.append("|" + "|".join("-" * (w[i] + 2) for i in range(len(heads))) + "|")
        for b in body:
            lines.append("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(b)) + " |")
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"

    def csv_text(self):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([h or k for k, h, _ in self.columns])  # a column's CSV name: its header if set, else its key
        for r in self.rows:
            w.writerow([_csv_cell(r.get(k)) for k, _, _ in self.columns])
        return buf.getvalue()


def _csv_cell(x):
    if x is None:
        return ""
    if isinstance(x, bool):
        return "1" if x else "0"
    if isinstance(x, (float, np.floating)):
        return "" if math.isnan(x) else repr(float(x))
    if isinstance(x, (np.integer,)):
        return str(int(x))
    return str(x)
