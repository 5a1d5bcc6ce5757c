"""Weights in and out of entrank: its HDF5 checkpoints, Hugging Face GPT-2 directories and llm.c
model files (gpt2_124M.bin layout). All three store the same GPT-2 tensors; they differ in names,
in the orientation of the linear layers (Hugging Face's Conv1D keeps (in, out)) and in llm.c's
padded vocabulary."""
import ast
import json
import os
import re

import numpy as np

from . import BadInput

# entrank /params names of the plain GPT-2 core, in llm.c's file order.
CORE = ["wte", "wpe", "blocks.ln1_w", "blocks.ln1_b", "blocks.qkv_w", "blocks.qkv_b", "blocks.attproj_w",
        "blocks.attproj_b", "blocks.ln2_w", "blocks.ln2_b", "blocks.fc_w", "blocks.fc_b", "blocks.fcproj_w",
        "blocks.fcproj_b", "lnf_w", "lnf_b"]
LLMC_MAGIC, LLMC_VERSION_FP32 = 20240326, 3


# ---- the resolved config text (libconfig) --------------------------------------------------------
def parse_config_text(text):
    """The resolved config a checkpoint stores, as {"group.key": value}. Enough of libconfig for what
    entrank writes: nested groups, scalars, strings, booleans, flat arrays and lists of tuples
    (data.blend's ((weight, "path", "format"), ...))."""
    text = re.sub(r"//[^\n]*", "", text)
    out, stack = {}, []
    for tok in re.finditer(r'(\w+)\s*=\s*\{|\}\s*;?|(\w+)\s*=\s*("(?:[^"\\]|\\.)*"|\[[^\]]*\]|\((?:[^;"]|"(?:[^"\\]|\\.)*")*\)|[^;]+);', text):
        if tok.group(1):
            stack.append(tok.group(1))
        elif tok.group(0).startswith("}"):
            stack.pop()
        else:
            key, raw = ".".join(stack + [tok.group(2)]), tok.group(3).strip()
            if raw.startswith('"'):
                val = json.loads(raw)
            elif raw.startswith("("):
                # A libconfig list of groups of numbers and strings is a Python literal as written.
                val = ast.literal_eval(raw)
            elif raw.startswith("["):
                val = [float(x) if "." in x or "e" in x.lower() else int(x) for x in raw[1:-1].split(",") if x.strip()]
            elif raw in ("true", "false"):
                val = raw == "true"
            else:
                val = float(raw) if re.search(r"[.eE]", raw) else int(raw)
            out[key] = val
    return out


# ---- entrank checkpoints -------------------------------------------------------------------------
def resolve_checkpoint(path):
    """A checkpoint file, RUN/checkpoints/latest or a run directory -> the checkpoint file, as
    `entrank eval` and `generate` accept them (src/eval_checkpoint.c)."""
    path = str(path)
    if os.path.isdir(path):
        for pointer in (os.path.join(path, "checkpoints", "latest"), os.path.join(path, "latest")):
            if os.path.exists(pointer):
                return resolve_checkpoint(pointer)
        raise BadInput(f"{path}: a directory without checkpoints/latest; give a checkpoint file, RUN/checkpoints/latest or a run directory")
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError as e:
        raise BadInput(f"{path}: cannot read checkpoint: {e.strerror}")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return path
    name = head.split()[0].decode(errors="replace") if head.split() else ""
    if name.endswith(".h5") and "/" not in name:
        return os.path.join(os.path.dirname(path), name)
    raise BadInput(f"{path}: neither an HDF5 checkpoint nor a `latest` pointer; give a checkpoint file, RUN/checkpoints/latest or a run directory")


class Checkpoint:
    """The parameters (and R3SI buffers) of an entrank checkpoint, with its shape and config."""

    def __init__(self, path):
        import h5py
        path = resolve_checkpoint(path)
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise BadInput(f"{path}: cannot read checkpoint: {e}")
        with f:
            if "params" not in f:
                raise BadInput(f"{path}: /params: missing (not an entrank checkpoint)")
            self.params = {k: np.asarray(f["params"][k], dtype=np.float32) for k in f["params"]}
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            self.buffers = {}
            if "r3si" in f:
                for k in f["r3si"]:
                    self.buffers[k] = np.asarray(f["r3si"][k])
        self.path = path
        self.config = parse_config_text(self.attrs.get("config", ""))
        a = self.attrs
        self.n_layer, self.n_head, self.d_model = int(a["model.n_layer"]), int(a["model.n_head"]), int(a["model.d_model"])
        self.seq_len, self.vocab_size, self.mlp_hidden = int(a["model.seq_len"]), int(a["model.vocab_size"]), int(a["model.mlp_hidden"])
        self.attention = a.get("model.attention", "sga" if a.get("model.sga") else "sdpa")
        self.norm_post, self.tied = bool(a["model.norm_post"]), bool(a["model.tie_embeddings"])
        self.r3si = bool(a.get("model.r3si", 0))

    def plain_gpt2_problem(self):
        """Why the model is not a plain pre-norm, tied GPT-2 (None when it is)."""
        if self.attention != "sdpa":
            return f"model.attention: \"{self.attention}\" (a GPT-2 directory holds sdpa attention only)"
        if self.norm_post:
            return "model.norm_post: post-norm blocks (GPT-2 is pre-norm)"
        if not self.tied:
            return "model.tie_embeddings: false (GPT-2's head is tied to wte)"
        if self.r3si:
            return "model.r3si: R3SI injection is not part of GPT-2"
        mode = self.config.get("temperature.mode", "none")
        if mode == "attention":
            return "temperature.mode: \"attention\" divides the attention logits (GPT-2 has no such scale)"
        return None

    def tokenizer_dir(self):
        """Where prepare-data left the run's tokenizer: the directory of data.train (see validate.c)."""
        train = self.config.get("data.train", "")
        return os.path.dirname(train) if train else None


def write_checkpoint(path, params, shape, config_text, attention="sdpa"):
    """A parameters-only entrank checkpoint (step 0, no optimizer state): what checkpoint_load reads
    with with_optimizer = 0 (`train --init-from`, `eval`, `generate`)."""
    import h5py
    L, NH, C, T, V, H = (shape[k] for k in ("n_layer", "n_head", "d_model", "seq_len", "vocab_size", "mlp_hidden"))
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        for k, v in [("format_version", 1), ("step", 0), ("tokens", 0), ("data_cursor", 0), ("seed", 1337),
                     ("adam_t", 0), ("bad_in_row", 0), ("dp", 1), ("pp", 1), ("zero", 0),
                     ("model.n_layer", L), ("model.n_head", NH), ("model.d_model", C), ("model.seq_len", T),
                     ("model.vocab_size", V), ("model.mlp_hidden", H), ("model.norm_post", 0), ("model.tie_embeddings", 1),
                     ("model.r3si", 0), ("model.r3si_inject", 0), ("model.sga", 0), ("model.sga_spectral", 0),
                     ("model.sga_fixed_filter", 0), ("model.sga_blend", 0), ("model.sga_hidden", 0), ("model.sga_embed", 0)]:
            f.attrs[k] = np.float64(v)
        f.attrs["model.attention"] = attention
        f.attrs["config"] = config_text
        g = f.create_group("params")
        for name in CORE:
            g.create_dataset(name, data=np.ascontiguousarray(params[name], dtype=np.float32))
    os.replace(tmp, path)


def config_text_for(shape, base_text=None):
    """The config stored with an imported model: the user's config (whose model section must match)
    or the model section alone (every other key keeps its default)."""
    if base_text is not None:
        return base_text
    return ("// written by tools/import-hf: the model's shape; every other key has its default\n"
            "model = {\n"
            f"  n_layer = {shape['n_layer']};\n  n_head = {shape['n_head']};\n  d_model = {shape['d_model']};\n"
            f"  seq_len = {shape['seq_len']};\n  vocab_size = {shape['vocab_size']};\n"
            f"  mlp_ratio = {shape['mlp_hidden'] / shape['d_model']!r};\n  norm = \"pre\";\n  tie_embeddings = true;\n"
            "};\n")


# ---- Hugging Face GPT-2 ------------------------------------------------------------------------
def to_hf(params, L):
    """entrank /params -> the state dict of transformers' GPT2LMHeadModel (lm_head tied, not stored)."""
    sd = {"transformer.wte.weight": params["wte"], "transformer.wpe.weight": params["wpe"],
          "transformer.ln_f.weight": params["lnf_w"], "transformer.ln_f.bias": params["lnf_b"]}
    for i in range(L):
        h = f"transformer.h.{i}."
        # Conv1D stores (in, out): the transpose of entrank's (out, in) weights.
        sd[h + "ln_1.weight"], sd[h + "ln_1.bias"] = params["blocks.ln1_w"][i], params["blocks.ln1_b"][i]
        sd[h + "attn.c_attn.weight"], sd[h + "attn.c_attn.bias"] = params["blocks.qkv_w"][i].T, params["blocks.qkv_b"][i]
        sd[h + "attn.c_proj.weight"], sd[h + "attn.c_proj.bias"] = params["blocks.attproj_w"][i].T, params["blocks.attproj_b"][i]
        sd[h + "ln_2.weight"], sd[h + "ln_2.bias"] = params["blocks.ln2_w"][i], params["blocks.ln2_b"][i]
        sd[h + "mlp.c_fc.weight"], sd[h + "mlp.c_fc.bias"] = params["blocks.fc_w"][i].T, params["blocks.fc_b"][i]
        sd[h + "mlp.c_proj.weight"], sd[h + "mlp.c_proj.bias"] = params["blocks.fcproj_w"][i].T, params["blocks.fcproj_b"][i]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def from_hf(sd, L, where):
    """A GPT2LMHeadModel state dict -> entrank /params."""
    def get(k):
        for key in (k, k.replace("transformer.", "", 1)):
            if key in sd:
                return np.asarray(sd[key], dtype=np.float32)
        raise BadInput(f"{where}: {k}: missing tensor")
    p = {"wte": get("transformer.wte.weight"), "wpe": get("transformer.wpe.weight"),
         "lnf_w": get("transformer.ln_f.weight"), "lnf_b": get("transformer.ln_f.bias")}
    per = {"blocks.ln1_w": ("ln_1.weight", False), "blocks.ln1_b": ("ln_1.bias", False),
           "blocks.qkv_w": ("attn.c_attn.weight", True), "blocks.qkv_b": ("attn.c_attn.bias", False),
           "blocks.attproj_w": ("attn.c_proj.weight", True), "blocks.attproj_b": ("attn.c_proj.bias", False),
           "blocks.ln2_w": ("ln_2.weight", False), "blocks.ln2_b": ("ln_2.bias", False),
           "blocks.fc_w": ("mlp.c_fc.weight", True), "blocks.fc_b": ("mlp.c_fc.bias", False),
           "blocks.fcproj_w": ("mlp.c_proj.weight", True), "blocks.fcproj_b": ("mlp.c_proj.bias", False)}
    for name, (hf, transpose) in per.items():
        rows = [get(f"transformer.h.{i}.{hf}") for i in range(L)]
        p[name] = np.stack([r.T if transpose else r for r in rows])
    return p


def hf_config(ck):
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": ck.vocab_size, "n_positions": ck.seq_len, "n_ctx": ck.seq_len, "n_embd": ck.d_model,
        "n_layer": ck.n_layer, "n_head": ck.n_head, "n_inner": ck.mlp_hidden,
        "activation_function": "gelu_new",          # entrank's GELU is the tanh approximation
        "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True, "initializer_range": 0.02, "torch_dtype": "float32",
    }


# Attention variants tools/entrank_tools/modeling_entrank.py implements.
MODULE_ATTENTION = ("sdpa", "sga", "head_scale")


def module_problem(ck):
    """Why modeling_entrank.py cannot run the model (None when it can)."""
    if ck.attention not in MODULE_ATTENTION:
        return f'model.attention: "{ck.attention}" (the PyTorch module implements {", ".join(MODULE_ATTENTION)})'
    return None


def attention_temperature(ck):
    """The logit temperature entrank evaluates the checkpoint with: temp(step - 1) of the
    temperature schedule (src/train.c temperature_at), 1 unless temperature.mode is "attention"."""
    c = ck.config
    if c.get("temperature.mode", "none") != "attention":
        return 1.0
    import math
    step = max(int(ck.attrs.get("step", 0)) - 1, 0)
    return c.get("temperature.base", 1.0) * (1 + c.get("temperature.beta", 0.2) * math.tanh(
        c.get("temperature.gamma", 0.001) * (step - c.get("temperature.t_switch", 0.0))))


def entrank_config(ck):
    """config.json of a directory that modeling_entrank.py loads."""
    a = ck.attrs
    cfg = {"architectures": ["EntrankForCausalLM"], "model_type": "entrank",
           "n_layer": ck.n_layer, "n_head": ck.n_head, "d_model": ck.d_model, "seq_len": ck.seq_len,
           "vocab_size": ck.vocab_size, "mlp_hidden": ck.mlp_hidden, "norm": "post" if ck.norm_post else "pre",
           "tie_embeddings": ck.tied, "attention": ck.attention, "attn_temperature": attention_temperature(ck),
           "torch_dtype": "float32"}
    if ck.attention == "sga":
        cfg["sga"] = {"spectral": bool(a["model.sga_spectral"]), "fixed_filter": bool(a["model.sga_fixed_filter"]),
                      "blend": bool(a["model.sga_blend"]), "gate_hidden": int(a["model.sga_hidden"]),
                      "embed_dim": int(a["model.sga_embed"])}
    if ck.r3si:
        cfg["r3si"] = {"inject": bool(a.get("model.r3si_inject", 0)),
                       "layers": [int(x) for x in ck.buffers["layers"]], "k": int(ck.buffers["V"].shape[2]),
                       "d_s": int(ck.params["blocks.r3si_ws"].shape[1]) if "blocks.r3si_ws" in ck.params else 0}
    return cfg


def entrank_tensors(ck):
    """model.safetensors of such a directory: the checkpoint's tensors under their own names, and
    R3SI's buffers as r3si.V, r3si.alpha and r3si.layers."""
    out = {k: np.ascontiguousarray(v) for k, v in ck.params.items()}
    for k, v in ck.buffers.items():
        out[f"r3si.{k}"] = np.ascontiguousarray(v)
    return out


def shape_from_hf_config(cfg, where):
    try:
        C = int(cfg["n_embd"])
        return {"n_layer": int(cfg["n_layer"]), "n_head": int(cfg["n_head"]), "d_model": C,
                "seq_len": int(cfg["n_positions"]), "vocab_size": int(cfg["vocab_size"]),
                "mlp_hidden": int(cfg.get("n_inner") or 4 * C)}
    except KeyError as e:
        raise BadInput(f"{where}: {e.args[0]}: missing (not a GPT-2 config.json)")


# ---- llm.c model files ---------------------------------------------------------------------------
def llmc_padded_vocab(V):
    return (V + 127) // 128 * 128   # llm.c pads 50257 to 50304: a multiple of 128


def write_llmc_model(path, params, shape):
    L, NH, C, T, V, H = (shape[k] for k in ("n_layer", "n_head", "d_model", "seq_len", "vocab_size", "mlp_hidden"))
    if H != 4 * C:
        raise BadInput(f"{path}: model.mlp_hidden: {H} (llm.c's format fixes the MLP width at 4 x d_model = {4 * C})")
    Vp = llmc_padded_vocab(V)
    header = np.zeros(256, dtype="<i4")
    header[:8] = [LLMC_MAGIC, LLMC_VERSION_FP32, T, V, L, NH, C, Vp]
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        for name in CORE:
            a = np.asarray(params[name], dtype="<f4")
            if name == "wte":
                a = np.concatenate([a, np.zeros((Vp - V, C), dtype="<f4")])   # padded rows are zero
            f.write(np.ascontiguousarray(a).tobytes())
    os.replace(tmp, path)


def read_llmc_model(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadInput(f"{path}: cannot read: {e.strerror}")
    if len(data) < 1024:
        raise BadInput(f"{path}: byte offset 0: truncated header ({len(data)} bytes, expected 1024)")
    h = np.frombuffer(data[:1024], dtype="<i4")
    if h[0] != LLMC_MAGIC:
        raise BadInput(f"{path}: byte offset 0: bad magic {h[0]} (an llm.c model file starts with {LLMC_MAGIC})")
    if h[1] != LLMC_VERSION_FP32:
        raise BadInput(f"{path}: byte offset 4: version {h[1]} (expected {LLMC_VERSION_FP32}: fp32 parameters)")
    T, V, L, NH, C, Vp = (int(x) for x in h[2:8])
    H = 4 * C
    shapes = {"wte": (Vp, C), "wpe": (T, C), "blocks.ln1_w": (L, C), "blocks.ln1_b": (L, C), "blocks.qkv_w": (L, 3 * C, C),
              "blocks.qkv_b": (L, 3 * C), "blocks.attproj_w": (L, C, C), "blocks.attproj_b": (L, C), "blocks.ln2_w": (L, C),
              "blocks.ln2_b": (L, C), "blocks.fc_w": (L, H, C), "blocks.fc_b": (L, H), "blocks.fcproj_w": (L, C, H),
              "blocks.fcproj_b": (L, C), "lnf_w": (C,), "lnf_b": (C,)}
    need = 1024 + 4 * sum(int(np.prod(s)) for s in shapes.values())
    if len(data) != need:
        raise BadInput(f"{path}: byte offset {min(len(data), need)}: the header's shape needs {need} bytes, the file has {len(data)}")
    params, off = {}, 1024
    for name in CORE:
        n = int(np.prod(shapes[name]))
        params[name] = np.frombuffer(data, dtype="<f4", count=n, offset=off).reshape(shapes[name]).copy()
        off += 4 * n
    params["wte"] = params["wte"][:V]
    shape = {"n_layer": L, "n_head": NH, "d_model": C, "seq_len": T, "vocab_size": V, "mlp_hidden": H}
    return params, shape
