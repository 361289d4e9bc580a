#!/usr/bin/python3
"""Independent float32 PyTorch reference and random-weight fixture writer for
Moonlight-MoE (SkAndMl moonlight-moe-pretrain / -it / -chat).

Written from shared/seeds/specs/moonlight-moe.md (cited below as "spec §N"), not from
the publisher's code. It is the oracle the compiled executables are compared against,
so it favours plain, explicit math over speed. Two separate code paths compute logits:

  * `Model.forward(tokens)`  prefill: all T positions in ONE call (matrix form, causal
                             mask, RoPE with explicit cos/sin, per-expert token
                             grouping WITH the per-call capacity rule of spec §4), and
  * `Model.decode(tokens)`   token by token through a KV cache (vector form, RoPE as a
                             complex product, per-token expert loop). Every call sees
                             t = 1 token, so cap = max(ceil(k*cf/E), 1) >= 1 and nothing
                             is ever dropped (spec §4).

`forward(tokens, dropless=True)` turns the capacity rule off; it must then equal
`decode` (the self-test checks this), while plain `forward` differs from `decode`
exactly on prompts where some expert is over capacity.

Math (spec §4): x = tok_emb[ids] (no scale, no absolute positions); per block
pre-RMSNorm (W * x * rsqrt(mean(x^2) + eps), eps from model_cfg), MHA (n_heads x hd, no
GQA, no bias, scale 1/sqrt(hd)) with INTERLEAVED RoPE over the full head (pair j =
(x[2j], x[2j+1]), theta_j = base^(-2j/hd)); MoE: fp32 softmax over all experts, top-k,
gates are the RAW probabilities (no renormalisation), experts Linear(net.0) -> ReLU ->
Linear(net.2); final RMSNorm; logits = x @ tok_emb^T + lm_head.bias (no logit scale).

Checkpoint (spec §2, §3): ONE torch pickle (zip) holding
  {"model": state_dict, "optimizer": AdamW state_dict, ["step": int,] "training_cfg":
   dict, "model_cfg": dict(ModelConfig fields)}
Every model key is prefixed "_orig_mod." (the state dict of a torch.compile wrapper);
tok_emb.weight and lm_head.weight share storage; lm_head.bias is separate; every block
carries the buffers mha.freqs_cis (complex64 [1,1,ctx,hd/2]) and mha.mask (f32
[1,1,ctx,ctx]), which the reference does not need (it recomputes RoPE) but checks.
"""
from __future__ import annotations

import math
import os
import pickle
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from reference_common import (KVCacheBase, TokenByTokenDecode, check_tokens,  # noqa: E402
                              strip_prefixes, tensor_rng, topk_margin)

# ModelConfig fields exactly as spelled and ordered in config.py (spec §2).
MODEL_CFG_FIELDS = ("base", "vocab_size", "ctx_size", "embed_dim", "n_heads", "ffn_dim", "eps",
                    "n_blocks", "n_experts", "k", "capacity_factor", "alpha_aux_loss")

PRESETS = {
    # awkward small sizes: head_dim 16, vocab 101 (prime), 6 experts top-2 as published
    "tiny": dict(base=10000, vocab_size=101, ctx_size=96, embed_dim=64, n_heads=4, ffn_dim=96,
                 eps=1e-8, n_blocks=3, n_experts=6, k=2, capacity_factor=1.25, alpha_aux_loss=1e-2),
    # different awkward sizes: head_dim 12, 5 heads, odd vocab, 5 experts top-3, cf 1.0,
    # non-default base and eps (so a loader that ignores model_cfg is caught)
    "tiny2": dict(base=500, vocab_size=77, ctx_size=80, embed_dim=60, n_heads=5, ffn_dim=44,
                  eps=1e-6, n_blocks=2, n_experts=5, k=3, capacity_factor=1.0, alpha_aux_loss=1e-2),
    # the published size (spec §2, HEAD defaults): 134,891,136 parameters
    "full": dict(base=10000, vocab_size=50304, ctx_size=1024, embed_dim=512, n_heads=8, ffn_dim=2048,
                 eps=1e-8, n_blocks=8, n_experts=6, k=2, capacity_factor=1.25, alpha_aux_loss=1e-2),
}

FULL_PARAMS = 134_891_136

# TrainingConfig of config.py with the card's values (batch 16, accumulation 8, cosine
# 6e-4 -> 6e-5, weight decay 1e-2). Only primitives, like `model_dump()` produces.
TRAINING_CFG = {"ctx_size": 1024, "batch_size": 16, "min_lr": 6e-5, "max_lr": 6e-4,
                "weight_decay": 1e-2, "accumulation_steps": 8, "device": "cuda"}

# Globals a weights-only unpickler may resolve (what torch >= 2's weights_only=True
# allows for a checkpoint like this one). Storage classes are mapped by torch itself.
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "Size"),
}


# --------------------------------------------------------------------------- config

def make_config(preset="tiny", **overrides) -> dict:
    """The ModelConfig dict of a preset (a copy), with `overrides` applied."""
    if isinstance(preset, dict):
        cfg = dict(preset)
    else:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        cfg = dict(PRESETS[preset])
    for k_, v in overrides.items():
        if k_ not in MODEL_CFG_FIELDS:
            raise ValueError(f"{k_}: not a ModelConfig field ({', '.join(MODEL_CFG_FIELDS)})")
        cfg[k_] = v
    validate_config(cfg)
    return {k_: cfg[k_] for k_ in MODEL_CFG_FIELDS}


def validate_config(c: dict) -> None:
    missing = [k_ for k_ in MODEL_CFG_FIELDS if k_ not in c]
    if missing:
        raise ValueError(f"model_cfg lacks {missing}")
    for k_ in ("vocab_size", "ctx_size", "embed_dim", "n_heads", "ffn_dim", "n_blocks", "n_experts", "k"):
        if not isinstance(c[k_], int) or c[k_] <= 0:
            raise ValueError(f"{k_}={c[k_]!r} must be a positive integer")
    if c["embed_dim"] % c["n_heads"] or (c["embed_dim"] // c["n_heads"]) % 2:
        raise ValueError("embed_dim / n_heads must be an even integer (interleaved RoPE pairs)")
    if not 1 <= c["k"] <= c["n_experts"]:
        raise ValueError("k must be in 1..n_experts")
    if not c["capacity_factor"] > 0:
        raise ValueError("capacity_factor must be > 0")


def tensor_shapes(c: dict) -> "OrderedDict[str, Tuple[tuple, torch.dtype]]":
    """Unprefixed state-dict key -> (shape, dtype), in state_dict order (spec §3 table).

    Order follows nn.Module.state_dict(): a module's own parameters, then its buffers,
    then its children in registration order (GPTMoE: tok_emb, blocks, norm, lm_head;
    Block: mha, ffn, norm1, norm2; MHA: buffers freqs_cis, mask, then QKV, O)."""
    V, D, F, E, L = c["vocab_size"], c["embed_dim"], c["ffn_dim"], c["n_experts"], c["n_blocks"]
    ctx, hd = c["ctx_size"], c["embed_dim"] // c["n_heads"]
    f32, c64 = torch.float32, torch.complex64
    s = OrderedDict()
    s["tok_emb.weight"] = ((V, D), f32)
    for i in range(L):
        p = f"blocks.{i}."
        s[p + "mha.freqs_cis"] = ((1, 1, ctx, hd // 2), c64)
        s[p + "mha.mask"] = ((1, 1, ctx, ctx), f32)
        s[p + "mha.QKV.weight"] = ((3 * D, D), f32)
        s[p + "mha.O.weight"] = ((D, D), f32)
        s[p + "ffn.router.W.weight"] = ((E, D), f32)
        for e in range(E):
            s[p + f"ffn.experts.{e}.net.0.weight"] = ((F, D), f32)
            s[p + f"ffn.experts.{e}.net.2.weight"] = ((D, F), f32)
        s[p + "norm1.W"] = ((D,), f32)
        s[p + "norm2.W"] = ((D,), f32)
    s["norm.W"] = ((D,), f32)
    s["lm_head.weight"] = ((V, D), f32)
    s["lm_head.bias"] = ((V,), f32)
    return s


def is_buffer(name: str) -> bool:
    return name.endswith("mha.freqs_cis") or name.endswith("mha.mask")


def param_counts(preset_or_model) -> Tuple[int, int]:
    """(total, active) unique parameters as the card counts them: the tied
    tok_emb/lm_head weight once, lm_head.bias counted, buffers not counted. Active =
    total minus the (n_experts - k) unused experts' weights of every block."""
    if isinstance(preset_or_model, Model):
        d = preset_or_model.dims
        V, D, F, E, L, K = d.vocab, d.d_model, d.ffn_dim, d.n_experts, d.n_layers, d.k
    else:
        c = make_config(preset_or_model) if isinstance(preset_or_model, str) else dict(preset_or_model)
        V, D, F, E, L, K = (c["vocab_size"], c["embed_dim"], c["ffn_dim"], c["n_experts"],
                            c["n_blocks"], c["k"])
    expert = 2 * F * D
    block = 4 * D * D + E * D + E * expert + 2 * D          # QKV + O, router, experts, norm1/2
    total = V * D + V + D + L * block                       # tied emb/head, head bias, final norm
    return total, total - L * (E - K) * expert


# --------------------------------------------------------------------------- math pieces

def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """W * x * rsqrt(mean(x^2) + eps) over the last axis (spec §4; all fp32)."""
    return w * (x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps))


def rope_angles(positions: torch.Tensor, head_dim: int, base: float, mode: str = "fp32") -> torch.Tensor:
    """Angles pos * theta_j, theta_j = base^(-2j/hd), j = 0..hd/2-1 (spec §4). [P, hd/2].

    mode "fp32" (default) follows the publisher, which builds the frequencies, the
    positions and their outer product in float32 (spec §4 "RoPE runs in fp32"), so the
    angles are bit-identical to the stored `freqs_cis` buffer. mode "fp64" computes the
    exact angles (returned as float64); the two give the same logits within 1e-5 for
    moderate lengths (self-test)."""
    if mode == "fp32":
        j = torch.arange(0, head_dim // 2)
        thetas = float(base) ** (-2 * (j / head_dim))          # float32
        return torch.outer(positions.to(torch.float32), thetas)
    if mode == "fp64":
        j = torch.arange(0, head_dim // 2, dtype=torch.float64)
        thetas = torch.pow(torch.tensor(float(base), dtype=torch.float64), -2.0 * j / head_dim)
        return torch.outer(positions.to(torch.float64), thetas)
    raise ValueError(f"rope mode {mode!r}: expected 'fp32' or 'fp64'")


def freqs_cis_buffer(c: dict) -> torch.Tensor:
    """The `mha.freqs_cis` buffer: exp(i * pos * theta_j) as complex64 [1, 1, ctx, hd/2]."""
    hd = c["embed_dim"] // c["n_heads"]
    ang = rope_angles(torch.arange(c["ctx_size"]), hd, c["base"], "fp32")
    return torch.complex(torch.cos(ang), torch.sin(ang))[None, None]


def mask_buffer(c: dict) -> torch.Tensor:
    """The `mha.mask` buffer: 0 on and below the diagonal, -inf above. [1, 1, ctx, ctx]."""
    n = c["ctx_size"]
    m = torch.zeros(n, n)
    m[torch.ones(n, n, dtype=torch.bool).triu(diagonal=1)] = float("-inf")
    return m[None, None]


def rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Interleaved-pair RoPE with explicit cos/sin (prefill path). x: [..., T, hd];
    cos/sin: [T, hd/2]. Pair j = (x[2j], x[2j+1]):
        out[2j]   = x[2j] * cos_j - x[2j+1] * sin_j
        out[2j+1] = x[2j] * sin_j + x[2j+1] * cos_j"""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def rope_interleaved_complex(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """The same rotation as a complex product (decode path): (x[2j] + i x[2j+1]) *
    exp(i a_j). x: [H, hd]; angles: [hd/2]."""
    H, hd = x.shape
    z = torch.view_as_complex(x.reshape(H, hd // 2, 2).contiguous())
    rot = torch.complex(torch.cos(angles), torch.sin(angles)).to(torch.complex64)
    return torch.view_as_real(z * rot[None, :]).reshape(H, hd)


def capacity(t: int, k: int, capacity_factor: float, n_experts: int) -> int:
    """Per-call expert capacity (spec §4): max(ceil(t * k * cf / E), 1), t = tokens in
    the call. Evaluated with Python floats in the same order as the publisher's formula,
    so boundary cases (t*k*cf/E integral) round the same way."""
    return max(math.ceil(t * k * capacity_factor / n_experts), 1)


def capacity_keep(gate: torch.Tensor, idx: torch.Tensor, n_experts: int, cap: int) -> torch.Tensor:
    """Which of the [t, k] assignments survive the capacity rule (spec §4).

    For every expert with more than `cap` assignments, only the `cap` with the highest
    gate are kept. Exact gate ties at the boundary are broken towards the earlier token
    (a stable sort); the publisher's topk may break them differently, which is why
    fixture seeds are rejected when the boundary gap is tiny (see capacity_gaps)."""
    keep = torch.ones_like(idx, dtype=torch.bool)
    for e in range(n_experts):
        tok, slot = (idx == e).nonzero(as_tuple=True)        # ordered by token, then slot
        if tok.numel() <= cap:
            continue
        order = torch.sort(gate[tok, slot], descending=True, stable=True).indices
        drop = order[cap:]
        keep[tok[drop], slot[drop]] = False
    return keep


def moe_prefill(h: torch.Tensor, router_w: torch.Tensor, up: torch.Tensor, down: torch.Tensor,
                k: int, capacity_factor: float, dropless: bool = False):
    """Token-choice top-k MoE over t = h.shape[0] tokens in one call (spec §4).

    h: [t, D]; router_w: [E, D]; up: [E, F, D] (net.0); down: [E, D, F] (net.2).
    Returns (y [t, D], info) with info = probs [t,E], gate [t,k] (raw softmax
    probabilities, NOT renormalised), idx [t,k], keep [t,k], cap."""
    t, E = h.shape[0], router_w.shape[0]
    probs = torch.softmax(h.float() @ router_w.t(), dim=-1)          # fp32 router
    gate, idx = torch.topk(probs, k, dim=-1)
    cap = capacity(t, k, capacity_factor, E)
    keep = torch.ones_like(idx, dtype=torch.bool) if dropless else capacity_keep(gate, idx, E, cap)
    y = torch.zeros_like(h)
    for e in range(E):
        tok, slot = ((idx == e) & keep).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        out = torch.relu(h[tok] @ up[e].t()) @ down[e].t()          # Linear -> ReLU -> Linear
        y.index_add_(0, tok, gate[tok, slot][:, None] * out)
    return y, {"probs": probs, "gate": gate, "idx": idx, "keep": keep, "cap": cap}


# --------------------------------------------------------------------------- checkpoint I/O

class _SafeUnpickler(pickle.Unpickler):
    """Refuses every global outside _SAFE_GLOBALS (torch maps storage classes itself)."""

    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


class _SafePickleModule:
    """A `pickle_module` for torch's zip loader that only knows _SafeUnpickler."""
    Unpickler = _SafeUnpickler
    __name__ = "moonlight_safe_pickle"


def load_checkpoint(path: str) -> dict:
    """torch.load(path, weights_only=True), as a careful user's loader does.

    torch 1.13's weights-only unpickler lacks the BINFLOAT opcode, so any checkpoint
    holding a Python float (model_cfg.eps, the optimizer's lr, ...) fails there; only
    in that case fall back to an equally restricted unpickler of our own."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if int(torch.__version__.split(".")[0]) >= 2:
            raise
    # torch 1.13's torch.load replaces any pickle_module by `pickle` unless weights_only
    # is set, so call its zip loader directly (private, but fixed in this old version).
    from torch import serialization as ser
    with open(path, "rb") as f, ser._open_zipfile_reader(f) as zf:
        return ser._load(zf, "cpu", _SafePickleModule, encoding="utf-8")


def find_checkpoint(path: str) -> str:
    """A .pt file, or a directory holding model.pt (else its only *.pt: best.pt, ...)."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise ValueError(f"{path}: no such file or directory")
    if os.path.isfile(os.path.join(path, "model.pt")):
        return os.path.join(path, "model.pt")
    pts = sorted(f for f in os.listdir(path) if f.endswith(".pt"))
    if len(pts) != 1:
        raise ValueError(f"{path}: expected model.pt or exactly one *.pt file, found {pts}")
    return os.path.join(path, pts[0])


# --------------------------------------------------------------------------- model

@dataclass
class Dims:
    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    head_dim: int
    n_experts: int
    ffn_dim: int
    k: int
    eps: float
    base: float
    capacity_factor: float
    ctx_size: int
    notes: List[str] = field(default_factory=list)


@dataclass
class LayerWeights:
    norm1: torch.Tensor
    wq: torch.Tensor        # rows 0:D of QKV.weight
    wk: torch.Tensor        # rows D:2D
    wv: torch.Tensor        # rows 2D:3D
    wo: torch.Tensor
    router: torch.Tensor    # [E, D]
    up: torch.Tensor        # [E, F, D]  (net.0 of every expert)
    down: torch.Tensor      # [E, D, F]  (net.2)
    norm2: torch.Tensor


class Model(TokenByTokenDecode):
    """Moonlight-MoE reference. `Model(state_dict, model_cfg)` or `Model.from_dir(path)`.
    Key prefixes "_orig_mod." (torch.compile, spec §3) / "module." are stripped."""

    def __init__(self, state_dict: Dict[str, torch.Tensor], model_cfg: Optional[dict] = None,
                 overrides: Optional[dict] = None, rope: str = "fp32"):
        sd = strip_prefixes(state_dict)
        cfg = dict(model_cfg or {})
        for k_, v in (overrides or {}).items():
            if k_ not in MODEL_CFG_FIELDS:
                raise ValueError(f"override {k_}: not a ModelConfig field")
            cfg[k_] = v
        self.rope = rope
        notes: List[str] = []

        def get(name, shape=None):
            if name not in sd:
                raise ValueError(f"checkpoint lacks {name!r}")
            t = sd[name]
            if t.is_complex():
                raise ValueError(f"{name}: unexpected complex tensor")
            if shape is not None and tuple(t.shape) != tuple(shape):
                raise ValueError(f"{name}: shape {tuple(t.shape)}, expected {tuple(shape)}")
            return t.float()

        # ---- sizes from tensor shapes (spec §3); what shapes cannot show from model_cfg
        V, D = get("tok_emb.weight").shape
        L = 1 + max((int(m.group(1)) for m in (re.match(r"blocks\.(\d+)\.", k_) for k_ in sd) if m), default=-1)
        E, F = get("blocks.0.ffn.router.W.weight").shape[0], get("blocks.0.ffn.experts.0.net.0.weight").shape[0]
        H = cfg.get("n_heads")
        fc = sd.get("blocks.0.mha.freqs_cis")
        if H is None and fc is not None:            # the buffer shows head_dim / 2
            H = D // (2 * fc.shape[-1])
            notes.append(f"n_heads={H} from the freqs_cis buffer (not in model_cfg)")
        if H is None:
            raise ValueError("n_heads: not in model_cfg and no freqs_cis buffer to derive it from")
        if D % H or (D // H) % 2:
            raise ValueError(f"embed_dim {D} / n_heads {H} is not an even head_dim")
        hd = D // H
        for key, val in (("vocab_size", V), ("embed_dim", D), ("n_blocks", L), ("n_experts", E), ("ffn_dim", F)):
            if key in cfg and cfg[key] != val:
                notes.append(f"model_cfg {key}={cfg[key]} but tensors say {val}: tensors win")
        defaults = PRESETS["full"]
        settings = {}
        for key in ("base", "eps", "k", "capacity_factor", "ctx_size"):
            if key in cfg and cfg[key] is not None:
                settings[key] = cfg[key]
            else:
                settings[key] = defaults[key]
                notes.append(f"{key}={defaults[key]} (default: not in model_cfg)")
        ctx = int(settings["ctx_size"])
        if fc is not None:
            if tuple(fc.shape) != (1, 1, fc.shape[2], hd // 2):
                raise ValueError(f"freqs_cis shape {tuple(fc.shape)} does not fit head_dim {hd}")
            if fc.shape[2] != ctx:
                notes.append(f"ctx_size={fc.shape[2]} from the freqs_cis buffer (model_cfg says {ctx})")
                ctx = fc.shape[2]
        if not 1 <= int(settings["k"]) <= E:
            raise ValueError(f"k={settings['k']} must be in 1..{E}")

        # ---- weights. A real checkpoint has tok_emb.weight and lm_head.weight sharing one
        # storage. If they differ, GPTMoE.load_state_dict copies lm_head.weight last into
        # the single tied parameter, so that value is used for both (spec §3).
        emb = get("tok_emb.weight", (V, D))
        if "lm_head.weight" in sd:
            head = get("lm_head.weight", (V, D))
            if not torch.equal(head, emb):
                notes.append("lm_head.weight != tok_emb.weight: using lm_head.weight for both (tied)")
                emb = head
        self.emb = emb
        self.head_bias = get("lm_head.bias", (V,))
        self.final_norm = get("norm.W", (D,))
        self.layers: List[LayerWeights] = []
        for i in range(L):
            p = f"blocks.{i}."
            qkv = get(p + "mha.QKV.weight", (3 * D, D))
            self.layers.append(LayerWeights(
                norm1=get(p + "norm1.W", (D,)),
                wq=qkv[0:D], wk=qkv[D:2 * D], wv=qkv[2 * D:3 * D],
                wo=get(p + "mha.O.weight", (D, D)),
                router=get(p + "ffn.router.W.weight", (E, D)),
                up=torch.stack([get(p + f"ffn.experts.{e}.net.0.weight", (F, D)) for e in range(E)]),
                down=torch.stack([get(p + f"ffn.experts.{e}.net.2.weight", (D, F)) for e in range(E)]),
                norm2=get(p + "norm2.W", (D,)),
            ))
        self.dims = Dims(vocab=V, d_model=D, n_layers=L, n_heads=H, head_dim=hd, n_experts=E, ffn_dim=F,
                         k=int(settings["k"]), eps=float(settings["eps"]), base=float(settings["base"]),
                         capacity_factor=float(settings["capacity_factor"]), ctx_size=ctx, notes=notes)
        self.vocab = V

    @classmethod
    def from_dir(cls, path: str, overrides: Optional[dict] = None, **kw) -> "Model":
        """Load a directory holding model.pt (or best.pt / it_best.pt / ...) or a .pt file."""
        ckpt = load_checkpoint(find_checkpoint(path))
        if not isinstance(ckpt, dict) or "model" not in ckpt:
            raise ValueError(f"{path}: not a Moonlight checkpoint dict with a 'model' entry")
        return cls(ckpt["model"], ckpt.get("model_cfg"), overrides=overrides, **kw)

    # ------------------------------------------------------------------ helpers

    def _check_tokens(self, tokens) -> torch.Tensor:
        return check_tokens(tokens, self.vocab, max_len=self.dims.ctx_size)

    def _cos_sin(self, positions: torch.Tensor):
        ang = rope_angles(positions, self.dims.head_dim, self.dims.base, self.rope)
        return torch.cos(ang).float(), torch.sin(ang).float()

    # ------------------------------------------------------------------ prefill path

    def forward(self, tokens, trace: Optional[list] = None, dropless: bool = False,
                cache: Optional["KVCache"] = None) -> torch.Tensor:
        """Logits [T, V] of one prefill call over `tokens` (positions 0..T-1).

        The capacity rule uses t = T (one sequence per call). dropless=True keeps every
        assignment. If `trace` is a list, one dict per layer is appended: layer, hidden
        [T,D] (after the layer), experts [T,k], weights [T,k] (the raw top-k softmax
        probabilities), kept [T,k] (False where the capacity rule dropped the
        assignment), probs [T,E], cap. If `cache` (empty) is given, the post-RoPE K and V
        of every layer are stored in it, as GPTMoE.generate's prefill does."""
        d = self.dims
        ids = self._check_tokens(tokens)
        T, H, hd, D = ids.numel(), d.n_heads, d.head_dim, d.d_model
        cos, sin = self._cos_sin(torch.arange(T))
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        x = self.emb[ids]
        with torch.no_grad():
            for li, lw in enumerate(self.layers):
                h = rms_norm(x, lw.norm1, d.eps)
                q = (h @ lw.wq.t()).view(T, H, hd).transpose(0, 1)        # [H, T, hd]
                k = (h @ lw.wk.t()).view(T, H, hd).transpose(0, 1)
                v = (h @ lw.wv.t()).view(T, H, hd).transpose(0, 1)
                q, k = rope_interleaved(q, cos, sin), rope_interleaved(k, cos, sin)
                if cache is not None:
                    cache.k[li][:, :T], cache.v[li][:, :T] = k, v
                s = (q @ k.transpose(1, 2)) / math.sqrt(hd)
                p = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1)
                o = (p @ v).transpose(0, 1).reshape(T, D)
                x = x + o @ lw.wo.t()
                h2 = rms_norm(x, lw.norm2, d.eps)
                y, info = moe_prefill(h2, lw.router, lw.up, lw.down, d.k, d.capacity_factor, dropless)
                x = x + y
                if trace is not None:
                    trace.append({"layer": li, "hidden": x.clone(), "experts": info["idx"].clone(),
                                  "weights": info["gate"].clone(), "kept": info["keep"].clone(),
                                  "probs": info["probs"].clone(), "cap": info["cap"]})
            if cache is not None:
                cache.pos = T
            x = rms_norm(x, self.final_norm, d.eps)
            return x @ self.emb.t() + self.head_bias

    def generate(self, tokens, n: int, dropless: bool = False) -> List[int]:
        """Greedy continuation as the publisher's generate runs it: one prefill call over
        the prompt (capacity rule included) filling the KV cache, then one token at a
        time through the cache."""
        cache = self.new_cache(len(tokens) + n)
        logits = self.forward(tokens, cache=cache, dropless=dropless)[-1]
        out = []
        for _ in range(n):
            out.append(int(torch.argmax(logits)))
            logits = cache.step(out[-1])
        return out

    # ------------------------------------------------------------------ decode path

    # decode(tokens) (TokenByTokenDecode): logits [T, V] one token at a time via new_cache

    def new_cache(self, capacity: int) -> "KVCache":
        return KVCache(self, capacity)


class KVCache(KVCacheBase):
    """Token-by-token decoder with its own K/V cache: a code path separate from
    `Model.forward` (matrix-vector products, per-head loop, complex RoPE, per-token
    expert loop)."""

    def __init__(self, model: Model, capacity: int):
        # post-RoPE K and V per layer, [H, capacity, hd] (spec §4: the cache holds rotated K);
        # at most ctx_size positions
        d = model.dims
        super().__init__(model, capacity, d.n_heads, d.head_dim, max_positions=d.ctx_size)

    def step(self, token: int) -> torch.Tensor:
        m, d = self.model, self.model.dims
        self.check_step(token, d.vocab)
        H, hd, pos = d.n_heads, d.head_dim, self.pos
        ang = rope_angles(torch.tensor([pos]), hd, d.base, m.rope)[0]
        x = m.emb[token].clone()
        with torch.no_grad():
            for li, lw in enumerate(m.layers):
                h = rms_norm(x, lw.norm1, d.eps)
                q = rope_interleaved_complex(torch.mv(lw.wq, h).view(H, hd), ang)
                self.k[li][:, pos] = rope_interleaved_complex(torch.mv(lw.wk, h).view(H, hd), ang)
                self.v[li][:, pos] = torch.mv(lw.wv, h).view(H, hd)
                heads = []
                for hh in range(H):
                    K, Vv = self.k[li][hh, :pos + 1], self.v[li][hh, :pos + 1]
                    pr = torch.softmax(torch.mv(K, q[hh]) / math.sqrt(hd), dim=0)
                    heads.append(torch.mv(Vv.t(), pr))
                x = x + torch.mv(lw.wo, torch.cat(heads))

                # MoE for one token: t = 1, so cap = max(ceil(k*cf/E), 1) >= 1 while every
                # expert receives at most one assignment: the capacity rule never drops.
                h2 = rms_norm(x, lw.norm2, d.eps)
                probs = torch.softmax(torch.mv(lw.router, h2), dim=0)
                gate, idx = torch.topk(probs, d.k)
                y = torch.zeros_like(h2)
                for slot in range(d.k):
                    e = int(idx[slot])
                    y = y + gate[slot] * torch.mv(lw.down[e], torch.relu(torch.mv(lw.up[e], h2)))
                x = x + y
            x = rms_norm(x, m.final_norm, d.eps)
            logits = torch.mv(m.emb, x) + m.head_bias
        self.pos += 1
        return logits


# --------------------------------------------------------------------------- routing margins

def capacity_gaps(model: Model, tokens) -> List[dict]:
    """For one prefill call over `tokens`: every (layer, expert) over capacity, with
    gap = (cap-th highest gate) - ((cap+1)-th highest gate) of that expert. A gap below
    ~1e-4 makes the drop decision depend on rounding and on torch's topk tie-breaking."""
    trace: list = []
    model.forward(tokens, trace=trace)
    out = []
    for t in trace:
        idx, gate, cap = t["experts"], t["weights"], t["cap"]
        for e in range(model.dims.n_experts):
            g = gate[idx == e]
            if g.numel() > cap:
                srt = torch.sort(g, descending=True).values
                out.append({"layer": t["layer"], "expert": e, "load": int(g.numel()), "cap": cap,
                            "gap": float(srt[cap - 1] - srt[cap])})
    return out


def _topk_margin(trace: list, k: int) -> float:
    """min over tokens and layers of (k-th minus (k+1)-th softmax probability)."""
    return min((topk_margin(t["probs"], k) for t in trace), default=math.inf)


def min_margins(model: Model, token_lists: Sequence[Sequence[int]]) -> dict:
    """Smallest routing margins over `token_lists` (each list is one prefill call).

    topk_margin_capacity: top-k margin along forward() with the capacity rule;
    topk_margin_dropless: along forward(dropless=True), i.e. the routing decode() sees;
    topk_margin: the smaller of the two;
    capacity_gap: smallest cap-th vs (cap+1)-th gate gap over all over-capacity experts
                  (inf when nothing is dropped); dropped: number of dropped assignments."""
    k = model.dims.k
    cap_m = drop_m = gap = math.inf
    dropped = 0
    for toks in token_lists:
        tr: list = []
        model.forward(toks, trace=tr)
        cap_m = min(cap_m, _topk_margin(tr, k))
        dropped += sum(int((~t["kept"]).sum()) for t in tr)
        tr = []
        model.forward(toks, trace=tr, dropless=True)
        drop_m = min(drop_m, _topk_margin(tr, k))
        for g in capacity_gaps(model, toks):
            gap = min(gap, g["gap"])
    return {"topk_margin": min(cap_m, drop_m), "topk_margin_capacity": cap_m,
            "topk_margin_dropless": drop_m, "capacity_gap": gap, "dropped": dropped}


# --------------------------------------------------------------------------- fixture writer

def init_tensor(name: str, shape, c: dict, seed: int) -> torch.Tensor:
    """Deterministic, well-conditioned random values for parameter `name` (unprefixed).

    Each tensor has its own generator keyed by (seed, name), so any tensor can be made
    alone. Scales: projections ~ N(0, 1/fan_in) (outputs of unit variance; O and net.2
    halved); tok_emb std 1/sqrt(D) so tied logits have std ~1; lm_head.bias U(-0.5, 0.5)
    so a loader that drops it is caught; norms U(0.8, 1.2); router ~ N(0, 2/D) (logits
    of std ~1.4: clear top-k choices). No skew is needed for the capacity rule to bite:
    the tokens of one prompt share much of their hidden state, so their routing is
    correlated and prompts of a few tokens already overflow some expert (cap ~ 0.42 t
    at the published k/E/cf)."""
    r = tensor_rng(seed, name)
    shape = tuple(shape)
    D = c["embed_dim"]

    def normal(std):
        return torch.from_numpy((r.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32))

    if name == "tok_emb.weight":
        return normal(1.0 / math.sqrt(D))
    if name == "lm_head.bias":
        return torch.from_numpy(r.uniform(-0.5, 0.5, size=shape).astype(np.float32))
    if name.endswith(".W"):                                   # norm1.W, norm2.W, norm.W
        return torch.from_numpy(r.uniform(0.8, 1.2, size=shape).astype(np.float32))
    if name.endswith("router.W.weight"):
        return normal(math.sqrt(2.0 / D))
    std = 1.0 / math.sqrt(shape[-1])                          # Linear [out, in]: fan_in last
    if name.endswith("mha.O.weight") or name.endswith("net.2.weight"):
        std *= 0.5
    return normal(std)


def build_state_dict(c: dict, seed: int) -> "OrderedDict[str, torch.Tensor]":
    """Unprefixed state dict (parameters and buffers) of a fixture, in memory. The tied
    lm_head.weight is the same tensor as tok_emb.weight."""
    sd = OrderedDict()
    fc, mask = freqs_cis_buffer(c), mask_buffer(c)
    for name, (shape, _) in tensor_shapes(c).items():
        if name.endswith("mha.freqs_cis"):
            sd[name] = fc.clone()
        elif name.endswith("mha.mask"):
            sd[name] = mask.clone()
        elif name == "lm_head.weight":
            sd[name] = sd["tok_emb.weight"]
        else:
            sd[name] = init_tensor(name, shape, c, seed)
    return sd


def _rms_module(D: int, device) -> nn.Module:
    m = nn.Module()
    m.W = nn.Parameter(torch.empty(D, device=device))
    return m


def skeleton(c: dict, prefix: str = "_orig_mod.", device="meta") -> Tuple[nn.Module, nn.Module]:
    """(wrapper, raw): an nn.Module tree with exactly the published module paths (spec §3),
    built on `device` ("meta" allocates nothing). `wrapper` nests `raw` under the names of
    `prefix` (for "_orig_mod." that is what torch.compile's OptimizedModule does), so
    wrapper.state_dict() has the keys, order and `_metadata` of the real checkpoints."""
    V, D, F, E, L = c["vocab_size"], c["embed_dim"], c["ffn_dim"], c["n_experts"], c["n_blocks"]
    ctx, hd = c["ctx_size"], c["embed_dim"] // c["n_heads"]
    raw = nn.Module()
    raw.tok_emb = nn.Embedding(V, D, device=device)
    raw.blocks = nn.ModuleList()
    for _ in range(L):
        blk = nn.Module()
        mha = nn.Module()
        mha.QKV = nn.Linear(D, 3 * D, bias=False, device=device)
        mha.O = nn.Linear(D, D, bias=False, device=device)
        mha.register_buffer("freqs_cis", torch.empty(1, 1, ctx, hd // 2, dtype=torch.complex64, device=device))
        mha.register_buffer("mask", torch.empty(1, 1, ctx, ctx, device=device))
        blk.mha = mha
        ffn = nn.Module()
        ffn.router = nn.Module()
        ffn.router.W = nn.Linear(D, E, bias=False, device=device)
        ffn.experts = nn.ModuleList()
        for _ in range(E):
            ex = nn.Module()
            ex.net = nn.Sequential(nn.Linear(D, F, bias=False, device=device), nn.ReLU(),
                                   nn.Linear(F, D, bias=False, device=device))
            ffn.experts.append(ex)
        blk.ffn = ffn
        blk.norm1 = _rms_module(D, device)
        blk.norm2 = _rms_module(D, device)
        raw.blocks.append(blk)
    raw.norm = _rms_module(D, device)
    raw.lm_head = nn.Linear(D, V, device=device)             # bias=True, as nn.Linear defaults
    raw.lm_head.weight = raw.tok_emb.weight                  # weight tying, as GPTMoE does
    wrapper = raw
    for part in reversed([p for p in prefix.split(".") if p]):
        outer = nn.Module()
        outer.add_module(part, wrapper)
        wrapper = outer
    return wrapper, raw


def _materialise(raw: nn.Module, sd: Dict[str, torch.Tensor]) -> None:
    """Replace the skeleton's meta tensors by the values of `sd` (unprefixed), keeping
    tok_emb / lm_head tied (one Parameter, hence one storage in the pickle)."""
    for name, value in sd.items():
        if name == "lm_head.weight":
            continue
        path, leaf = name.rsplit(".", 1)
        mod = raw.get_submodule(path)
        if leaf in mod._buffers:
            mod._buffers[leaf] = value
        else:
            setattr(mod, leaf, nn.Parameter(value))
    raw.lm_head.weight = raw.tok_emb.weight


def _optimizer_state(raw: nn.Module, seed: int, with_step: bool) -> dict:
    """A real torch.optim.AdamW state_dict with the training script's two groups
    (weight decay except on names containing 'bias' or 'norm'; betas (0.9, 0.95)).

    with_step: one step on CLONES of the parameters with random gradients, so the state
    holds exp_avg / exp_avg_sq / step tensors while the saved weights stay the seed's
    values. Otherwise the state is empty (param_groups only)."""
    named = list(raw.named_parameters())                    # tied weight listed once
    params = [nn.Parameter(p.detach().clone()) for _, p in named] if with_step else [p for _, p in named]
    decay = [p for (n, _), p in zip(named, params) if not any(s in n for s in ("bias", "norm"))]
    nodecay = [p for (n, _), p in zip(named, params) if any(s in n for s in ("bias", "norm"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": TRAINING_CFG["weight_decay"]},
                             {"params": nodecay, "weight_decay": 0}],
                            lr=TRAINING_CFG["max_lr"], betas=(0.9, 0.95), eps=1e-8)
    if with_step:
        g = torch.Generator().manual_seed(seed)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) * 1e-3
        opt.step()
    return opt.state_dict()


def write_fixture(out_dir: str, preset="tiny", seed: int = 1, prefix: str = "_orig_mod.",
                  form: str = "pretrain", optimizer: Optional[str] = None, step: int = 1000,
                  filename: str = "model.pt", cfg_overrides: Optional[dict] = None) -> str:
    """Write a random-weight checkpoint in the published format (spec §3) to
    out_dir/filename (default model.pt). Returns its path. Deterministic in `seed`.

    preset: a PRESETS name or a ModelConfig dict; cfg_overrides: fields to change.
    prefix: prepended to every model key ("_orig_mod." as published; "" or "module." too).
    form: "pretrain" (dict has "step", like best.pt) or "it" (no "step", like it_best.pt /
          chat_best.pt).
    optimizer: "step" (AdamW after one step: real state tensors) or "empty" (AdamW
          state_dict before any step: param_groups only). Default "step", except for the
          "full" preset, where "empty" keeps the file at ~0.57 GB instead of ~1.6 GB.

    torch.save pickles the whole dict at once, so all weights are in memory together
    (~0.55 GB at full size); tensors are created one at a time straight into the
    meta-device module tree, without a second copy."""
    if form not in ("pretrain", "it"):
        raise ValueError(f"form {form!r}: expected 'pretrain' or 'it'")
    c = make_config(preset, **(cfg_overrides or {}))
    if optimizer is None:
        optimizer = "empty" if preset == "full" else "step"
    if optimizer not in ("step", "empty"):
        raise ValueError(f"optimizer {optimizer!r}: expected 'step' or 'empty'")
    wrapper, raw = skeleton(c, prefix)
    _materialise(raw, build_state_dict(c, seed))
    ckpt = {"model": wrapper.state_dict(),
            "optimizer": _optimizer_state(raw, seed, optimizer == "step")}
    if form == "pretrain":
        ckpt["step"] = int(step)
    ckpt["training_cfg"] = dict(TRAINING_CFG)
    ckpt["model_cfg"] = dict(c)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, filename)
    torch.save(ckpt, path + ".tmp")                          # zip format, default protocol
    os.replace(path + ".tmp", path)
    return path


def load_model(path: str, overrides: Optional[dict] = None, **kw) -> Model:
    return Model.from_dir(path, overrides=overrides, **kw)
