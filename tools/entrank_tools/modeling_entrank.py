"""modeling_entrank: entrank's decoder in plain PyTorch, self-contained (torch and safetensors only).

tools/export-hf copies this file into the directories it writes for models that are not GPT-2
(Spectral Gated Attention with any of its ablations, the head_scale variant, R3SI's injection,
post-norm blocks, an untied head, an attention temperature), next to config.json and model.safetensors, so the model runs without entrank:

    import sys; sys.path.insert(0, "hf/my-sga-model")
    from modeling_entrank import EntrankForCausalLM
    model = EntrankForCausalLM.from_pretrained("hf/my-sga-model").eval()
    logits = model(torch.tensor([[0, 17, 4]]))          # (B, T, vocab)

It computes what entrank's evaluation pass computes (src/model.c, src/sga.c, src/cpu/sga.inc,
src/r3si.c): the same ops in the same order, so the logits agree with entrank's within fp32
rounding. Training-only behaviour (R3SI's monitor and L_SD, LayerDrop, stochastic depth, the
attention regularisers) does not exist at evaluation and is not here; R3SI injects with the
buffers (V_c, alpha_c) stored in the checkpoint, as entrank's evaluation and generation do.

model.safetensors holds entrank's own tensor names at their checkpoint shapes (per-layer tensors
stacked over layers, R3SI's W_s over the checkpoint blocks), plus R3SI's buffers as r3si.V (C, D, k),
r3si.alpha (C) and r3si.layers (C)."""
import json
import math
import os

import torch
import torch.nn.functional as F

SGA_EPS = 1e-8                               # src/cpu/sga.inc SGA_EPS
LN_EPS = 1e-5                                # src/cpu/layernorm.inc
FLT_MIN = 1.1754943508222875e-38             # REAL_TINY of the fp32 backend: log(p + tiny) in the entropy


def gelu(x):
    # src/cpu/elementwise.inc: x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3): GPT-2's tanh GELU
    return F.gelu(x, approximate="tanh")


def dct_matrix(T, dtype):
    """The orthonormal DCT-II as a (T, T) matrix M: s = M z (row k: c_k cos(pi (n + 1/2) k / T),
    c_0 = sqrt(1/T), c_k = sqrt(2/T)); its inverse is M^T. entrank computes the same transform with
    one real FFT per row (Makhoul's algorithm); the two agree to rounding."""
    n = torch.arange(T, dtype=torch.float64)
    k = n[:, None]
    m = torch.cos(math.pi * (n[None, :] + 0.5) * k / T) * math.sqrt(2.0 / T)
    m[0] *= math.sqrt(0.5)
    return m.to(dtype)


class SgaLogits(torch.nn.Module):
    """Spectral Gated Attention's row chain of one layer (src/sga.c sga_forward_slice): for every
    query row i, the causal logits a_i0..a_ii zero-padded to T -> DCT-II -> the power spectrum's
    DC fraction, centroid, flatness and normalised entropy -> gate MLP (with the layer embedding)
    -> sigmoid gate on the spectrum -> inverse DCT -> a' = (1 - alpha) a + alpha z'."""

    def __init__(self, T, spectral, fixed_filter, blend, hidden, embed):
        super().__init__()
        self.T, self.spectral, self.fixed_filter, self.blend = T, spectral, fixed_filter, blend
        if not fixed_filter:
            self.e = torch.nn.Parameter(torch.zeros(embed))
            self.w1 = torch.nn.Parameter(torch.zeros(hidden, embed + 4))
            self.b1 = torch.nn.Parameter(torch.zeros(hidden))
            self.w2 = torch.nn.Parameter(torch.zeros(T, hidden))
            self.b2 = torch.nn.Parameter(torch.zeros(T))
        if blend:
            self.alpha = torch.nn.Parameter(torch.zeros(1))
        self.register_buffer("dct", dct_matrix(T, torch.float32), persistent=False)
        # The fixed-filter ablation (src/cpu/sga.inc cpu_sga_fixed_gate): DC x0.7, the middle third x1.2.
        k = torch.arange(T)
        fixed = torch.where((3 * k >= T) & (3 * k < 2 * T), 1.2, 1.0)
        fixed[0] = 0.7
        self.register_buffer("fixed_gate", fixed, persistent=False)

    def forward(self, a):                                   # a (B, NH, T, T) scaled logits
        T = a.shape[-1]
        causal = torch.ones(T, T, dtype=torch.bool, device=a.device).tril()
        z = a.masked_fill(~causal, 0.0)                     # (B, NH, T, T) each row zero-padded to T
        dct = self.dct.to(a.dtype)
        s = z @ dct.T if self.spectral else z               # spectrum s (B, NH, T, T)
        P = s * s
        w = torch.arange(T, dtype=a.dtype, device=a.device) / (T - 1)
        sumP = P.sum(-1)
        E = sumP + SGA_EPS
        p = P / E[..., None]
        stats = torch.stack([
            P[..., 0] / E,                                                       # DC fraction
            (P * w).sum(-1) / E,                                                 # centroid
            torch.exp(torch.log(P + SGA_EPS).sum(-1) / T) / (sumP / T + SGA_EPS),  # flatness
            -(p * torch.log(p + FLT_MIN)).sum(-1) / math.log(T),                 # normalised entropy
        ], dim=-1)                                                               # (B, NH, T, 4)
        if self.fixed_filter:
            g = self.fixed_gate.to(a.dtype)
        else:
            u = torch.cat([self.e.expand(*stats.shape[:-1], -1), stats], dim=-1)  # (B, NH, T, De + 4)
            h = gelu(u @ self.w1.T + self.b1)                                     # (B, NH, T, Hg)
            g = torch.sigmoid(h @ self.w2.T + self.b2)                            # (B, NH, T, T)
        y = g * s
        zp = y @ dct if self.spectral else y                                      # z' (B, NH, T, T)
        alpha = self.alpha.clamp(0, 1) if self.blend else torch.ones(1, dtype=a.dtype, device=a.device)
        return torch.where(causal, (1 - alpha) * a + alpha * zp, a)


class HeadScaleLogits(torch.nn.Module):
    """attention.kind "head_scale" (src/attn_head_scale.c): a learned scale per head, l = s_h a."""

    def __init__(self, n_head):
        super().__init__()
        self.s = torch.nn.Parameter(torch.ones(n_head))

    def forward(self, a):                                   # a (B, NH, T, T)
        return a * self.s[None, :, None, None]


class R3siInjection(torch.nn.Module):
    """R3SI's injection at one checkpoint block (src/r3si.c r3si_block_input):
    H' = H + alpha_c (H W_s^T W_s) (I - V_c V_c^T), with V_c and alpha_c from the checkpoint."""

    def __init__(self, d_model, d_s, k):
        super().__init__()
        self.ws = torch.nn.Parameter(torch.zeros(d_s, d_model))
        self.register_buffer("V", torch.zeros(d_model, k))
        self.register_buffer("alpha", torch.zeros(()))

    def forward(self, x):                                   # x (B, T, C)
        if float(self.alpha) <= 0:
            return x
        u = (x @ self.ws.T) @ self.ws                        # (B, T, C)
        u = u - (u @ self.V) @ self.V.T                      # the component outside the top-k subspace
        return x + self.alpha.to(x.dtype) * u


class Block(torch.nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        C, H = cfg["d_model"], cfg["mlp_hidden"]
        self.n_head, self.post = cfg["n_head"], cfg["norm"] == "post"
        self.scale = 1.0 / (math.sqrt(C // self.n_head) * cfg.get("attn_temperature", 1.0))
        self.ln1, self.ln2 = torch.nn.LayerNorm(C, eps=LN_EPS), torch.nn.LayerNorm(C, eps=LN_EPS)
        self.qkv, self.attproj = torch.nn.Linear(C, 3 * C), torch.nn.Linear(C, C)
        self.fc, self.fcproj = torch.nn.Linear(C, H), torch.nn.Linear(H, C)
        # The attention variant's rewrite of the logits between scale q k^T and the causal softmax.
        self.sga = self.head_scale = None
        if cfg["attention"] == "sga":
            s = cfg["sga"]
            self.sga = SgaLogits(cfg["seq_len"], s["spectral"], s["fixed_filter"], s["blend"], s["gate_hidden"], s["embed_dim"])
        elif cfg["attention"] == "head_scale":
            self.head_scale = HeadScaleLogits(self.n_head)
        elif cfg["attention"] != "sdpa":
            raise ValueError(f'attention "{cfg["attention"]}" is not implemented here')
        r = cfg.get("r3si") or {}
        self.r3si = R3siInjection(C, r["d_s"], r["k"]) if r.get("inject") and layer in r["layers"] else None

    def attention(self, x):                                 # x (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, NH, T, hs)
        a = (q @ k.transpose(-1, -2)) * self.scale          # (B, NH, T, T)
        if self.sga is not None:
            a = self.sga(a)
        if self.head_scale is not None:
            a = self.head_scale(a)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = torch.softmax(a.masked_fill(~causal, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)      # (B, T, C)
        return self.attproj(y)

    def mlp(self, x):
        return self.fcproj(gelu(self.fc(x)))

    def forward(self, x):
        if self.r3si is not None:
            x = self.r3si(x)
        if self.post:                                       # x' = LN1(x + Attn(x)); out = LN2(x' + MLP(x'))
            x = self.ln1(x + self.attention(x))
            return self.ln2(x + self.mlp(x))
        x = x + self.attention(self.ln1(x))                 # x' = x + Attn(LN1(x)); out = x' + MLP(LN2(x'))
        return x + self.mlp(self.ln2(x))


class EntrankForCausalLM(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        C, V, T = cfg["d_model"], cfg["vocab_size"], cfg["seq_len"]
        self.wte, self.wpe = torch.nn.Embedding(V, C), torch.nn.Embedding(T, C)
        self.blocks = torch.nn.ModuleList(Block(cfg, l) for l in range(cfg["n_layer"]))
        self.lnf = torch.nn.LayerNorm(C, eps=LN_EPS)
        self.lm_head = None if cfg["tie_embeddings"] else torch.nn.Parameter(torch.zeros(V, C))

    def forward(self, idx):                                 # idx (B, T) token ids, T <= seq_len
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        head = self.wte.weight if self.lm_head is None else self.lm_head
        return self.lnf(x) @ head.T                         # (B, T, V) logits

    # ---- entrank's tensors in and out -----------------------------------------------------------
    def load_entrank_tensors(self, t):
        """Copies entrank's named tensors (checkpoint names and shapes, R3SI buffers as r3si.*)."""
        cfg = self.config

        def put(dst, src):
            src = torch.as_tensor(src)
            if tuple(src.shape) != tuple(dst.shape):
                raise ValueError(f"shape {tuple(src.shape)} where {tuple(dst.shape)} is expected")
            with torch.no_grad():
                dst.copy_(src.to(dst.dtype))

        put(self.wte.weight, t["wte"])
        put(self.wpe.weight, t["wpe"])
        put(self.lnf.weight, t["lnf_w"])
        put(self.lnf.bias, t["lnf_b"])
        if self.lm_head is not None:
            put(self.lm_head, t["lm_head"])
        pairs = [("ln1", "ln1"), ("ln2", "ln2"), ("qkv", "qkv"), ("attproj", "attproj"), ("fc", "fc"), ("fcproj", "fcproj")]
        r = cfg.get("r3si") or {}
        ckpt_layers = list(r.get("layers", []))
        for l, b in enumerate(self.blocks):
            for mod, name in pairs:
                put(getattr(b, mod).weight, t[f"blocks.{name}_w"][l])
                put(getattr(b, mod).bias, t[f"blocks.{name}_b"][l])
            if b.sga is not None:
                if not b.sga.fixed_filter:
                    for p in ("e", "w1", "b1", "w2", "b2"):
                        put(getattr(b.sga, p), t[f"blocks.sga_{p}"][l])
                if b.sga.blend:
                    put(b.sga.alpha, t["blocks.sga_alpha"][l])
            if b.head_scale is not None:
                put(b.head_scale.s, t["blocks.head_scale"][l])
            if b.r3si is not None:
                c = ckpt_layers.index(l)
                ws = torch.as_tensor(t["blocks.r3si_ws"])
                # W_s is stacked over the checkpoint blocks (older files: over every layer)
                put(b.r3si.ws, ws[c] if ws.shape[0] == len(ckpt_layers) else ws[l])
                put(b.r3si.V, t["r3si.V"][c])
                put(b.r3si.alpha, torch.as_tensor(t["r3si.alpha"])[c])

    @classmethod
    def from_pretrained(cls, directory, dtype=torch.float32):
        from safetensors.torch import load_file
        with open(os.path.join(directory, "config.json")) as f:
            cfg = json.load(f)
        model = cls(cfg).to(dtype)
        model.load_entrank_tensors(load_file(os.path.join(directory, "model.safetensors")))
        return model
