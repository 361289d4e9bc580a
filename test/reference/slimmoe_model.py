#!/usr/bin/python3
"""Independent float32 PyTorch reference and random-weight fixture writer for
SlimMoE-250M (SlimFactoryHub/SlimMoE-250M-base / -SFT-v2 / -instruct).

Written from shared/seeds/specs/SlimMoE-250M.md (cited below as "spec §N"). The spec's
confidence is LOW: no modeling code, config.json or tensor list of the real model was
found. This module implements the spec's best default guess (end of spec §4), i.e. the
Mixtral layout of spec §4a:

  * keys: model.embed_tokens.weight, model.layers.{i}.input_layernorm.weight,
    .self_attn.{q,k,v,o}_proj.weight (no bias), .post_attention_layernorm.weight,
    .block_sparse_moe.gate.weight [E,H], .block_sparse_moe.experts.{e}.w1/w3 [I,H]
    (gate/up) and .w2 [H,I] (down), model.norm.weight, lm_head.weight (optional: tied
    when absent);
  * math: pre-RMSNorm (fp32, w * x * rsqrt(mean(x^2)+eps)), GQA attention (q head h uses
    kv head h // (H/Hkv), as repeat_kv), HALF-SPLIT RoPE (rotate_half) with rope_theta,
    SwiGLU experts w2(silu(w1 x) * w3 x), softmax top-k (num_experts_per_tok, 2) with
    the top-k weights RENORMALISED, no shared expert, dropless; logits = norm(x) @
    lm_head^T, no scale.

Two separate code paths compute the logits: `Model.forward` (prefill, matrix form,
rotate_half RoPE, per-expert token grouping) and `Model.decode` (token by token with a
KV cache, complex-product RoPE, per-token expert loop); the self-test checks they agree.

Fixture format: config.json (transformers style, architectures ["SlimMoEForCausalLM"])
+ model.safetensors, or sharded model-0000i-of-0000N.safetensors +
model.safetensors.index.json; F32 (as the card says), F16 or BF16.

Full size (spec §1 card table + §3 budget): 16 layers, hidden 768, FFN 1536, 12 heads
(head_dim 64), 4 experts, vocab 50257, context 2048. The card gives no kv-head count:
we use 4 kv heads (GQA groups of 3), the spec §3 row "SwiGLU, 4 kv heads" = 251.7M
non-embedding parameters, which fits "250M" (3 kv heads, 250.2M, would fit as well;
the reference itself takes the count from config.json and the k_proj shape).
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from reference_common import (KVCacheBase, TokenByTokenDecode, check_tokens,  # noqa: E402
                              read_config_json, round_to, tensor_rng, topk_margin, write_json)
from safetensors_io import LazyTensor, read_safetensors, write_safetensors  # noqa: E402

PRESETS = {
    # awkward small sizes: head_dim 16, GQA 4q/2kv, vocab 103 (prime), rope_theta 500
    "tiny": dict(vocab_size=103, hidden_size=64, intermediate_size=40, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                 num_experts_per_tok=2, rms_norm_eps=1e-5, rope_theta=500.0,
                 max_position_embeddings=128),
    # different awkward sizes: head_dim 12, GQA 6q/2kv (groups of 3), 5 experts, odd vocab
    "tiny2": dict(vocab_size=77, hidden_size=72, intermediate_size=36, num_hidden_layers=2,
                  num_attention_heads=6, num_key_value_heads=2, num_local_experts=5,
                  num_experts_per_tok=2, rms_norm_eps=1e-6, rope_theta=1e6,
                  max_position_embeddings=96),
    # the card's sizes (spec §1); kv heads 4 and rope_theta 1e4 are our guesses
    "full": dict(vocab_size=50257, hidden_size=768, intermediate_size=1536, num_hidden_layers=16,
                 num_attention_heads=12, num_key_value_heads=4, num_local_experts=4,
                 num_experts_per_tok=2, rms_norm_eps=1e-5, rope_theta=10000.0,
                 max_position_embeddings=2048),
}

# total (tied), active, non-embedding parameters of the full preset (spec §3 table row
# "SwiGLU, 4 kv heads": 251.7M non-embedding, 290.3M tied total)
FULL_PARAMS = 290_330_112
FULL_ACTIVE_PARAMS = 177_083_904
FULL_NON_EMBEDDING = 251_731_968

# Defaults for settings a config.json may leave out (Mixtral config defaults, spec §4a).
SETTING_DEFAULTS = {"rms_norm_eps": 1e-5, "rope_theta": 1e6, "num_experts_per_tok": 2}

_TORCH_DTYPE_NAME = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}

INDEX_NAME = "model.safetensors.index.json"


# --------------------------------------------------------------------------- config

def make_config(preset="tiny", tie: str = "absent", dtype: str = "F32", **overrides) -> dict:
    """config.json contents (transformers style) for a preset.

    tie: "absent" / "duplicate" -> tie_word_embeddings true; "untied" -> false."""
    if isinstance(preset, dict):
        sizes = dict(preset)
    else:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        sizes = dict(PRESETS[preset])
    sizes.update(overrides)
    if dtype not in _TORCH_DTYPE_NAME:
        raise ValueError(f"dtype {dtype!r}: expected F32, F16 or BF16")
    if tie not in ("absent", "duplicate", "untied"):
        raise ValueError(f"tie {tie!r}: expected absent, duplicate or untied")
    c = OrderedDict()
    c["architectures"] = ["SlimMoEForCausalLM"]
    c["model_type"] = "slimmoe"
    c["auto_map"] = {"AutoConfig": "configuration_slimmoe.SlimMoEConfig",
                     "AutoModelForCausalLM": "modeling_slimmoe.SlimMoEForCausalLM"}
    for k_ in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "num_local_experts",
               "num_experts_per_tok", "rms_norm_eps", "rope_theta", "max_position_embeddings"):
        c[k_] = sizes[k_]
    c["hidden_act"] = "silu"
    c["attention_dropout"] = 0.0
    c["hidden_dropout"] = 0.1            # card: "Dropout 0.1" (training only)
    c["tie_word_embeddings"] = tie != "untied"
    c["bos_token_id"] = c["eos_token_id"] = min(50256, c["vocab_size"] - 1)   # GPT-2 <|endoftext|>
    c["torch_dtype"] = _TORCH_DTYPE_NAME[dtype]
    c["transformers_version"] = "4.46.0"
    validate_config(c)
    return dict(c)


def validate_config(c: dict) -> None:
    for k_ in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "num_local_experts", "num_experts_per_tok"):
        if not isinstance(c[k_], int) or c[k_] <= 0:
            raise ValueError(f"{k_}={c[k_]!r} must be a positive integer")
    H, Hkv, D = c["num_attention_heads"], c["num_key_value_heads"], c["hidden_size"]
    if D % H or (D // H) % 2:
        raise ValueError("hidden_size / num_attention_heads must be an even head_dim")
    if H % Hkv:
        raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
    if not c["num_experts_per_tok"] <= c["num_local_experts"]:
        raise ValueError("num_experts_per_tok must be <= num_local_experts")


def tensor_shapes(c: dict, tie: str = "absent") -> "OrderedDict[str, tuple]":
    """Stored key -> shape, in the model's state_dict order (spec §4a)."""
    V, D, F = c["vocab_size"], c["hidden_size"], c["intermediate_size"]
    H, Hkv, E = c["num_attention_heads"], c["num_key_value_heads"], c["num_local_experts"]
    hd = D // H
    s = OrderedDict()
    s["model.embed_tokens.weight"] = (V, D)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s[p + "self_attn.q_proj.weight"] = (H * hd, D)
        s[p + "self_attn.k_proj.weight"] = (Hkv * hd, D)
        s[p + "self_attn.v_proj.weight"] = (Hkv * hd, D)
        s[p + "self_attn.o_proj.weight"] = (D, H * hd)
        s[p + "block_sparse_moe.gate.weight"] = (E, D)
        for e in range(E):
            s[p + f"block_sparse_moe.experts.{e}.w1.weight"] = (F, D)
            s[p + f"block_sparse_moe.experts.{e}.w2.weight"] = (D, F)
            s[p + f"block_sparse_moe.experts.{e}.w3.weight"] = (F, D)
        s[p + "input_layernorm.weight"] = (D,)
        s[p + "post_attention_layernorm.weight"] = (D,)
    s["model.norm.weight"] = (D,)
    if tie != "absent":
        s["lm_head.weight"] = (V, D)
    return s


def param_counts(preset_or_model) -> Tuple[int, int]:
    """(total, active) unique parameters: a tied lm_head counted once; active = total
    minus the (E - k) unused experts of every layer."""
    if isinstance(preset_or_model, Model):
        d = preset_or_model.dims
        V, D, F, L, H, Hkv, hd, E, K, tied = (d.vocab, d.d_model, d.ffn_dim, d.n_layers, d.n_heads,
                                              d.n_kv_heads, d.head_dim, d.n_experts, d.k, d.tied)
    else:
        c = make_config(preset_or_model) if isinstance(preset_or_model, str) else preset_or_model
        V, D, F, L = c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
        H, Hkv, E, K = (c["num_attention_heads"], c["num_key_value_heads"], c["num_local_experts"],
                        c["num_experts_per_tok"])
        hd, tied = D // H, c.get("tie_word_embeddings", True)
    expert = 3 * F * D
    layer = 2 * H * hd * D + 2 * Hkv * hd * D + E * D + E * expert + 2 * D
    total = V * D + (0 if tied else V * D) + D + L * layer
    return total, total - L * (E - K) * expert


# --------------------------------------------------------------------------- math pieces

def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """w * (x * rsqrt(mean(x^2) + eps)), normalisation in fp32 (Mixtral RMSNorm)."""
    x32 = x.float()
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)).to(x.dtype)


def rope_inv_freq(head_dim: int, theta: float, mode: str = "fp32") -> torch.Tensor:
    """inv_freq[j] = 1 / theta^(2j/hd), j = 0..hd/2-1. fp32 as transformers computes it
    (default); fp64 = exact values (for the fp32-vs-fp64 tolerance check)."""
    if mode == "fp32":
        return 1.0 / (float(theta) ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if mode == "fp64":
        return 1.0 / (float(theta) ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    raise ValueError(f"rope mode {mode!r}: expected 'fp32' or 'fp64'")


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float, mode: str = "fp32") -> torch.Tensor:
    inv = rope_inv_freq(head_dim, theta, mode)
    return torch.outer(positions.to(inv.dtype), inv)                 # [P, hd/2]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] with x1 = x[..., :hd/2], x2 = x[..., hd/2:]."""
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_half_split(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Prefill RoPE, transformers form: x * cos + rotate_half(x) * sin with
    cos = cos(cat(angles, angles)). x: [..., T, hd]; angles: [T, hd/2]. Dim j is paired
    with dim j + hd/2 and both rotate by angle j."""
    emb = torch.cat((angles, angles), dim=-1)
    cos, sin = torch.cos(emb).float(), torch.sin(emb).float()
    return x * cos + rotate_half(x) * sin


def rope_half_split_complex(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Decode RoPE: the same rotation as a complex product (x[j] + i x[j+hd/2]) *
    exp(i a_j). x: [H, hd]; angles: [hd/2]."""
    h = x.shape[-1] // 2
    z = torch.complex(x[:, :h].contiguous(), x[:, h:].contiguous())
    r = z * torch.complex(torch.cos(angles), torch.sin(angles)).to(torch.complex64)[None, :]
    return torch.cat((r.real, r.imag), dim=-1)


def route(h: torch.Tensor, gate_w: torch.Tensor, k: int):
    """Mixtral router (spec §4a): probs = softmax(h @ gate^T) in fp32, top-k, weights
    renormalised to sum to 1. Returns (probs [N,E], idx [N,k], weights [N,k])."""
    probs = torch.softmax((h @ gate_w.t()).float(), dim=-1)
    w, idx = torch.topk(probs, k, dim=-1)
    return probs, idx, w / w.sum(dim=-1, keepdim=True)


def swiglu(x, w1, w3, w2):
    """w2(silu(w1 x) * w3 x), nn.Linear layouts."""
    return (torch.nn.functional.silu(x @ w1.t()) * (x @ w3.t())) @ w2.t()


# --------------------------------------------------------------------------- loading

def read_weights(path: str) -> Dict[str, torch.Tensor]:
    """Every tensor of a directory (model.safetensors, or the shards listed by
    model.safetensors.index.json) or of one .safetensors file."""
    if os.path.isfile(path):
        return read_safetensors(path)
    index = os.path.join(path, INDEX_NAME)
    single = os.path.join(path, "model.safetensors")
    if os.path.isfile(index):
        with open(index, "r", encoding="utf-8") as f:
            idx = json.load(f)
        wmap = idx.get("weight_map")
        if not isinstance(wmap, dict) or not wmap:
            raise ValueError(f"{index}: no weight_map")
        out: Dict[str, torch.Tensor] = {}
        for shard in sorted(set(wmap.values())):
            if os.path.basename(shard) != shard:
                raise ValueError(f"{index}: shard name {shard!r} is not a plain file name")
            tensors = read_safetensors(os.path.join(path, shard))
            listed = {k_ for k_, v in wmap.items() if v == shard}
            if set(tensors) != listed:
                raise ValueError(f"{shard}: holds {sorted(set(tensors) ^ listed)[:5]} contrary to the index")
            out.update(tensors)
        return out
    if os.path.isfile(single):
        return read_safetensors(single)
    raise ValueError(f"{path}: neither {INDEX_NAME} nor model.safetensors")


@dataclass
class Dims:
    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_experts: int
    ffn_dim: int
    k: int
    eps: float
    rope_theta: float
    tied: bool
    notes: List[str] = field(default_factory=list)


@dataclass
class LayerWeights:
    ln1: torch.Tensor
    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    wo: torch.Tensor
    ln2: torch.Tensor
    gate: torch.Tensor       # [E, D]
    w1: torch.Tensor         # [E, F, D]
    w3: torch.Tensor         # [E, F, D]
    w2: torch.Tensor         # [E, D, F]


class Model(TokenByTokenDecode):
    """SlimMoE reference. `Model(tensors, config)` or `Model.from_dir(path)`."""

    def __init__(self, tensors: Dict[str, torch.Tensor], config: Optional[dict] = None,
                 overrides: Optional[dict] = None, rope: str = "fp32"):
        cfg = dict(config or {})
        cfg.update(overrides or {})
        sd = tensors
        self.rope = rope
        notes: List[str] = []

        def get(name, shape=None):
            if name not in sd:
                raise ValueError(f"checkpoint lacks {name!r}")
            t = sd[name]
            if shape is not None and tuple(t.shape) != tuple(shape):
                raise ValueError(f"{name}: shape {tuple(t.shape)}, expected {tuple(shape)}")
            return t.float()                         # F16 / BF16 sources are upcast once

        emb = get("model.embed_tokens.weight")
        V, D = emb.shape
        L = 1 + max((int(m.group(1)) for m in (re.match(r"model\.layers\.(\d+)\.", k_) for k_ in sd) if m),
                    default=-1)
        E, F = get("model.layers.0.block_sparse_moe.gate.weight").shape[0], \
            get("model.layers.0.block_sparse_moe.experts.0.w1.weight").shape[0]
        # head counts: shapes show only H*hd and Hkv*hd, so the head count comes from config
        H = int(cfg.get("num_attention_heads", 0)) or None
        if H is None:
            raise ValueError("num_attention_heads: not in config.json")
        hd = int(cfg.get("head_dim") or D // H)
        q_rows = get("model.layers.0.self_attn.q_proj.weight").shape[0]
        if q_rows != H * hd:
            raise ValueError(f"q_proj has {q_rows} rows, expected heads {H} x head_dim {hd}")
        kv_rows = get("model.layers.0.self_attn.k_proj.weight").shape[0]
        if kv_rows % hd or H % (kv_rows // hd):
            raise ValueError(f"k_proj has {kv_rows} rows: not a divisor of {H} heads x {hd}")
        Hkv = kv_rows // hd
        if cfg.get("num_key_value_heads", Hkv) != Hkv:
            notes.append(f"config num_key_value_heads={cfg['num_key_value_heads']} but k_proj says {Hkv}")
        settings = {}
        for key, default in SETTING_DEFAULTS.items():
            if cfg.get(key) is not None:
                settings[key] = cfg[key]
            else:
                settings[key] = default
                notes.append(f"{key}={default} (default: not in config.json)")
        k = int(settings["num_experts_per_tok"])
        if not 1 <= k <= E:
            raise ValueError(f"num_experts_per_tok={k} must be in 1..{E}")

        # tying as transformers does it: tie_word_embeddings true -> lm_head IS the
        # embedding (a stored lm_head.weight is ignored); false -> lm_head.weight required.
        # When the config does not say, tie exactly when no lm_head.weight is stored.
        tie_cfg = cfg.get("tie_word_embeddings")
        tied = ("lm_head.weight" not in sd) if tie_cfg is None else bool(tie_cfg)
        if tied:
            if "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"].float(), emb):
                notes.append("tie_word_embeddings: stored lm_head.weight differs from the embedding; ignored")
            self.head = emb
        else:
            self.head = get("lm_head.weight", (V, D))
        self.emb = emb
        self.final_norm = get("model.norm.weight", (D,))
        self.layers: List[LayerWeights] = []
        for i in range(L):
            p = f"model.layers.{i}."
            x = p + "block_sparse_moe.experts.{}."
            self.layers.append(LayerWeights(
                ln1=get(p + "input_layernorm.weight", (D,)),
                wq=get(p + "self_attn.q_proj.weight", (H * hd, D)),
                wk=get(p + "self_attn.k_proj.weight", (Hkv * hd, D)),
                wv=get(p + "self_attn.v_proj.weight", (Hkv * hd, D)),
                wo=get(p + "self_attn.o_proj.weight", (D, H * hd)),
                ln2=get(p + "post_attention_layernorm.weight", (D,)),
                gate=get(p + "block_sparse_moe.gate.weight", (E, D)),
                w1=torch.stack([get(x.format(e) + "w1.weight", (F, D)) for e in range(E)]),
                w3=torch.stack([get(x.format(e) + "w3.weight", (F, D)) for e in range(E)]),
                w2=torch.stack([get(x.format(e) + "w2.weight", (D, F)) for e in range(E)]),
            ))
        self.dims = Dims(vocab=V, d_model=D, n_layers=L, n_heads=H, n_kv_heads=Hkv, head_dim=hd,
                         n_experts=E, ffn_dim=F, k=k, eps=float(settings["rms_norm_eps"]),
                         rope_theta=float(settings["rope_theta"]), tied=tied, notes=notes)
        self.vocab = V
        self.max_positions = cfg.get("max_position_embeddings")

    @classmethod
    def from_dir(cls, path: str, overrides: Optional[dict] = None, **kw) -> "Model":
        """Load a directory with config.json + model.safetensors (or sharded safetensors
        with model.safetensors.index.json)."""
        config = read_config_json(path, "head counts cannot be read from the tensors")
        return cls(read_weights(path), config, overrides=overrides, **kw)

    def _check_tokens(self, tokens) -> torch.Tensor:
        return check_tokens(tokens, self.vocab)

    # ------------------------------------------------------------------ prefill path

    def forward(self, tokens, trace: Optional[list] = None) -> torch.Tensor:
        """Logits [T, V] for `tokens` at positions 0..T-1 (one prefill). If `trace` is a
        list, one dict per layer is appended: layer, hidden [T,D] after the layer,
        experts [T,k], weights [T,k] (renormalised), probs [T,E]."""
        d = self.dims
        ids = self._check_tokens(tokens)
        T, H, Hkv, hd = ids.numel(), d.n_heads, d.n_kv_heads, d.head_dim
        G = H // Hkv
        ang = rope_angles(torch.arange(T), hd, d.rope_theta, self.rope)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        x = self.emb[ids]
        with torch.no_grad():
            for li, lw in enumerate(self.layers):
                h = rms_norm(x, lw.ln1, d.eps)
                q = rope_half_split((h @ lw.wq.t()).view(T, H, hd).transpose(0, 1), ang)     # [H, T, hd]
                k = rope_half_split((h @ lw.wk.t()).view(T, Hkv, hd).transpose(0, 1), ang)   # [Hkv, T, hd]
                v = (h @ lw.wv.t()).view(T, Hkv, hd).transpose(0, 1)
                k, v = k.repeat_interleave(G, dim=0), v.repeat_interleave(G, dim=0)          # repeat_kv
                s = (q @ k.transpose(1, 2)) / math.sqrt(hd)
                p = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1)
                x = x + (p @ v).transpose(0, 1).reshape(T, H * hd) @ lw.wo.t()
                h2 = rms_norm(x, lw.ln2, d.eps)
                probs, idx, w = route(h2, lw.gate, d.k)
                y = torch.zeros_like(h2)
                for e in range(d.n_experts):                         # dropless
                    tok, slot = (idx == e).nonzero(as_tuple=True)
                    if tok.numel():
                        y.index_add_(0, tok, w[tok, slot][:, None] * swiglu(h2[tok], lw.w1[e], lw.w3[e], lw.w2[e]))
                x = x + y
                if trace is not None:
                    trace.append({"layer": li, "hidden": x.clone(), "experts": idx.clone(),
                                  "weights": w.clone(), "probs": probs.clone()})
            return rms_norm(x, self.final_norm, d.eps) @ self.head.t()

    # ------------------------------------------------------------------ decode path
    # decode(tokens) (TokenByTokenDecode): logits [T, V] one token at a time via new_cache

    def new_cache(self, capacity: int) -> "KVCache":
        return KVCache(self, capacity)


class KVCache(KVCacheBase):
    """Token-by-token decoder (vector math, per-head loop, complex RoPE, per-token
    expert loop): a code path separate from `Model.forward`."""

    def __init__(self, model: Model, capacity: int):
        # post-RoPE K and V per layer, [Hkv, capacity, hd]
        super().__init__(model, capacity, model.dims.n_kv_heads, model.dims.head_dim)

    def step(self, token: int) -> torch.Tensor:
        m, d = self.model, self.model.dims
        self.check_step(token, d.vocab)
        H, Hkv, hd, pos = d.n_heads, d.n_kv_heads, d.head_dim, self.pos
        G = H // Hkv
        ang = rope_angles(torch.tensor([pos]), hd, d.rope_theta, m.rope)[0]
        x = m.emb[token].clone()
        with torch.no_grad():
            for li, lw in enumerate(m.layers):
                h = rms_norm(x, lw.ln1, d.eps)
                q = rope_half_split_complex(torch.mv(lw.wq, h).view(H, hd), ang)
                self.k[li][:, pos] = rope_half_split_complex(torch.mv(lw.wk, h).view(Hkv, hd), ang)
                self.v[li][:, pos] = torch.mv(lw.wv, h).view(Hkv, hd)
                heads = []
                for qh in range(H):
                    g = qh // G                                       # kv head serving q head qh
                    pr = torch.softmax(torch.mv(self.k[li][g, :pos + 1], q[qh]) / math.sqrt(hd), dim=0)
                    heads.append(torch.mv(self.v[li][g, :pos + 1].t(), pr))
                x = x + torch.mv(lw.wo, torch.cat(heads))
                h2 = rms_norm(x, lw.ln2, d.eps)
                probs = torch.softmax(torch.mv(lw.gate, h2), dim=0)
                top, idx = torch.topk(probs, d.k)
                total = top.sum()
                y = torch.zeros_like(h2)
                for slot in range(d.k):
                    e = int(idx[slot])
                    a = torch.nn.functional.silu(torch.mv(lw.w1[e], h2)) * torch.mv(lw.w3[e], h2)
                    y = y + (top[slot] / total) * torch.mv(lw.w2[e], a)
                x = x + y
            logits = torch.mv(m.head, rms_norm(x, m.final_norm, d.eps))
        self.pos += 1
        return logits


# --------------------------------------------------------------------------- routing margins

def min_margins(model: Model, token_lists: Sequence[Sequence[int]]) -> dict:
    """Smallest top-k margin (k-th minus (k+1)-th softmax probability) over every token
    of every list and every layer. The MoE is dropless, so forward and decode route the
    same tokens identically: one pass per list suffices."""
    k, best = model.dims.k, math.inf
    for toks in token_lists:
        tr: list = []
        model.forward(toks, trace=tr)
        for t in tr:
            best = min(best, topk_margin(t["probs"], k))
    return {"topk_margin": best}


# --------------------------------------------------------------------------- fixture writer

def init_tensor(name: str, shape, c: dict, seed: int) -> np.ndarray:
    """Deterministic random values for `name`, from its own (seed, name) generator so
    tensors can be streamed one at a time. Scales: projections ~ N(0, 1/fan_in) (o_proj
    and w2 halved), embedding std 1/sqrt(D) (tied logits of std ~1), norms U(0.8, 1.2),
    router N(0, 2/D) (logits of std ~1.4: clear top-2 choices). A tied lm_head stored
    twice gets the embedding's values."""
    if name == "lm_head.weight" and c.get("tie_word_embeddings", True):
        name = "model.embed_tokens.weight"
    r = tensor_rng(seed, name)
    shape = tuple(shape)
    D = c["hidden_size"]

    def normal(std):
        return (r.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return normal(1.0 / math.sqrt(D))
    if name.endswith("norm.weight"):
        return r.uniform(0.8, 1.2, size=shape).astype(np.float32)
    if name.endswith("block_sparse_moe.gate.weight"):
        return normal(math.sqrt(2.0 / D))
    std = 1.0 / math.sqrt(shape[-1])
    if name.endswith("o_proj.weight") or name.endswith("w2.weight"):
        std *= 0.5
    return normal(std)


def build_state_dict(c: dict, seed: int, tie: str = "absent", dtype: str = "F32") -> Dict[str, torch.Tensor]:
    """The fixture's tensors in memory (values as a reader sees them after `dtype`)."""
    return {n: round_to(init_tensor(n, s, c, seed), dtype) for n, s in tensor_shapes(c, tie).items()}


def _shard_plan(shapes: "OrderedDict[str, tuple]", dtype: str, shards: int) -> List[List[str]]:
    """Split keys (state_dict order) into `shards` consecutive groups of about equal
    byte size, like save_pretrained's greedy max_shard_size split."""
    item = 4 if dtype == "F32" else 2
    sizes = [(n, item * int(np.prod(s))) for n, s in shapes.items()]
    total = sum(b for _, b in sizes)
    target = total / shards
    plan: List[List[str]] = [[]]
    acc = 0
    for n, b in sizes:
        if plan[-1] and acc + b > target * len(plan) and len(plan) < shards:
            plan.append([])
        plan[-1].append(n)
        acc += b
    if len(plan) != shards:
        raise ValueError(f"cannot split {len(sizes)} tensors into {shards} non-empty shards")
    return plan


def write_fixture(out_dir: str, preset="tiny", seed: int = 1, dtype: str = "F32", shards: int = 1,
                  tie: str = "absent", cfg_overrides: Optional[dict] = None) -> List[str]:
    """Write config.json + weights into out_dir (created). Returns the files written.

    dtype: "F32" (the card's precision), "F16" or "BF16" for every tensor.
    shards: 1 -> model.safetensors; N > 1 -> model-0000i-of-0000N.safetensors +
            model.safetensors.index.json ({"metadata": {"total_size": bytes of all
            tensors}, "weight_map": {key: file}}, keys sorted, as transformers writes it).
    tie: "absent" (tied, no lm_head.weight key), "duplicate" (tied, lm_head.weight stored
         too, equal to the embedding) or "untied" (tie_word_embeddings false, own lm_head).
    Tensors are produced one at a time while writing (LazyTensor), so the full preset
    (~1.16 GB in F32) never sits in memory."""
    c = make_config(preset, tie=tie, dtype=dtype, **(cfg_overrides or {}))
    if not isinstance(shards, int) or shards < 1:
        raise ValueError("shards must be a positive integer")
    os.makedirs(out_dir, exist_ok=True)
    shapes = tensor_shapes(c, tie)

    def lazy(name):
        return LazyTensor(dtype, shapes[name], lambda: init_tensor(name, shapes[name], c, seed))

    written = []
    for stale in os.listdir(out_dir):   # a previous fixture's shards would confuse a reader
        if re.fullmatch(r"model(-\d{5}-of-\d{5})?\.safetensors|" + re.escape(INDEX_NAME), stale):
            os.remove(os.path.join(out_dir, stale))
    if shards == 1:
        path = os.path.join(out_dir, "model.safetensors")
        write_safetensors(path, {n: lazy(n) for n in shapes}, metadata={"format": "pt"})
        written.append(path)
    else:
        plan = _shard_plan(shapes, dtype, shards)
        weight_map, total = {}, 0
        item = 4 if dtype == "F32" else 2
        for i, names in enumerate(plan):
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            path = os.path.join(out_dir, fname)
            write_safetensors(path, {n: lazy(n) for n in names}, metadata={"format": "pt"})
            written.append(path)
            for n in names:
                weight_map[n] = fname
                total += item * int(np.prod(shapes[n]))
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        path = os.path.join(out_dir, INDEX_NAME)
        write_json(path, index)
        written.append(path)
    path = os.path.join(out_dir, "config.json")
    write_json(path, c)
    written.append(path)
    return written


def load_model(path: str, overrides: Optional[dict] = None, **kw) -> Model:
    return Model.from_dir(path, overrides=overrides, **kw)
