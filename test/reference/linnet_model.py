#!/usr/bin/python3
"""Independent float32 PyTorch reference + random-weight fixtures for linnet-497M.

Written from shared/seeds/specs/linnet-497M.md (cited below as "spec §N"; the model
card is shared/seeds/cards/linnet-497M.txt). No publisher code is used or needed.

Two separate code paths compute the same logits, so the reference checks itself:

  * `Model.forward(tokens)`  prefill: all T positions at once (matrix form; the causal
                             depthwise conv as a sum of zero-padded time shifts over the
                             whole sequence; causal-masked attention; per-expert token
                             grouping for the MoE), and
  * `Model.decode(tokens)`   token by token (vector form) through a KV cache and a
                             per-layer conv state; RoPE as a complex rotation; per-token
                             expert loop with a sort-based top-k.

Math (spec §4 "Forward math", followed line by line):

    x = wte[idx]                                      (no embedding scale, no positions)
    per block i:
      h   = RMSNorm(x; ln1, eps 1e-6) = x * rsqrt(mean(x^2) + 1e-6) * w
      u   = causal depthwise conv of h along time, kernel K=3, no bias (spec §4 step 1):
              u[t,c] = w[c,0,0]*h[t-2,c] + w[c,0,1]*h[t-1,c] + w[c,0,2]*h[t,c],  h[<0] = 0
            i.e. PyTorch Conv1d (a cross-correlation) after LEFT zero padding of K-1;
            tap K-1 multiplies the current position. The conv has no residual of its own
            and feeds Q, K and V. Decode keeps, per layer, a "conv state" of the last K-1
            ln1 OUTPUTS h (not the conv outputs u, not the raw residual x), zeros at start
            (spec §4 "Notes for a compiler", first bullet).
      qkv = u @ c_attn.T ; rows [0,d) = Q (n_head heads), [d, d+kv) = K, [d+kv, d+2kv) = V
      q,k = half-split ("rotate_half", NeoX) RoPE on all head_dim dims, theta 50000:
              x' = x*cos + cat(-x[hd/2:], x[:hd/2])*sin, cos/sin = cat(ang, ang),
              ang[t,j] = t * inv_freq[j]
      q,k = LayerNorm over head_dim, eps 1e-5, NO affine (mean-subtracting), AFTER RoPE
            (so the cached K is post-RoPE, post-norm)
      GQA: kv head g serves q heads g*G .. g*G+G-1 (repeat_interleave), G = n_head/n_kv
      y   = softmax(q k^T / sqrt(hd) + causal mask) v ; x += y @ c_proj.T
      h2  = RMSNorm(x; ln2, eps 1e-6)
      p   = softmax(h2 @ router.T) over ALL experts; w, idx = topk(p, 2); w /= sum(w)
      x  += sum_k w_k * Expert_idx_k(h2),
            Expert(z) = c_proj( silu(z @ Wg.T) * (z @ Wv.T) ),
            [Wg; Wv] = swiglu.w_v.weight rows [0, ffn) = GATE (silu), [ffn, 2ffn) = VALUE
            (spec §3 table + §4: `gate, value = w_v(x).chunk(2, -1)`)
    x = RMSNorm(x; ln_f, eps 1e-6); logits = x @ wte.T  (tied; no scale, no softcap)

RoPE frequencies (spec §3, `attn.rotary_emb.inv_freq`): the checkpoint stores them as a
persistent fp32 buffer per layer; the publisher's loader copies them into the model, so
this reference USES THE STORED VALUES (head_dim = 2 * len(inv_freq)). By default the
angles are formed in fp32 exactly like the publisher (fp32 position times fp32 inv_freq,
cos/sin in fp32); `overrides={"rope_angles": "fp64"}` forms them in float64 instead, and
`overrides={"rope_theta": X}` ignores the stored buffer and recomputes
1/X^(arange(0,hd,2)/hd). If the buffers are absent, head_dim 64 and theta 50000 are used
(spec §2: head_dim = n_embd // n_head = 64 for every depth).

Sizes come from tensor shapes only (spec §2 last paragraph: config.json is descriptive
only and may lie): vocab = wte rows, n_embd = wte cols, n_layer = number of
`transformer.h.{i}` blocks, head_dim from inv_freq, n_head = n_embd / head_dim,
n_kv_head = (c_attn rows - n_embd) / (2 head_dim), ffn from experts' c_proj, n_experts
from router rows. top_k is not visible in shapes: 2 (spec §2), override "top_k".
Keys: a leading "_orig_mod." (torch.compile) and/or "module." (DDP) is stripped (spec §3);
`transformer.wte.weight` and `lm_head.weight` are aliases of each other (either or both).

Fixtures (`write_fixture`) reproduce the publisher's files (spec §1 "Uploader", §3):
`pytorch_model.bin` = a real `torch.save` of the flat state_dict (an OrderedDict with
nn.Module-style `_metadata`, keys in module registration order, wte/lm_head sharing one
storage, inv_freq buffers included), `model.safetensors` (F32 by default; the tied pair
deduplicated the way HF's safetensors converter does it: it keeps the sorted-first name
`lm_head.weight`), and `config.json` as hf_upload.py writes it (descriptive only; the
auto-generated variant says vocab_size 50257 and torch_dtype bfloat16 whatever the
tensors are).

    /usr/bin/python3 test/reference/linnet_model.py fixture --out DIR [--preset tiny]
        [--seed N] [--prefix _orig_mod.] [--dtype F32|F16|BF16] [--weights both|safetensors|bin]
        [--safetensors-tied lm_head|wte|both] [--check-tokens "1,2,3;4,5"]
    /usr/bin/python3 test/reference/linnet_model.py logits --model DIR --tokens 1,2,3 --out f.f32 [--decode]
    /usr/bin/python3 test/reference/linnet_model.py counts [--preset full]
"""
from __future__ import annotations

import argparse
import collections
import math
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from reference_common import (check_tokens, strip_prefixes, tensor_getter, tensor_rng,  # noqa: E402
                              write_json, write_logits)
from safetensors_io import LazyTensor, read_safetensors, write_safetensors  # noqa: E402

# --------------------------------------------------------------------------- constants

RMS_EPS = 1e-6          # spec §4: RMSNorm x * rsqrt(mean(x^2) + 1e-6) * w
QK_EPS = 1e-5           # spec §4 step 5: nn.LayerNorm default eps, no affine
ROPE_THETA = 50000.0    # spec §2: RotaryEmbedding(base=50000.0)
CONV_KERNEL = 3         # spec §3: l_conv.weight [n_embd, 1, 3]
TOP_K = 2               # spec §2: n_active_experts default 2
DEFAULT_HEAD_DIM = 64   # spec §2: head_dim = n_embd // n_head = 64 for every depth
MARGIN_MIN = 1e-3       # smallest router logit margin accepted for a fixture seed
MAX_TRIES = 50

FULL_PARAMS = 497_145_600          # card "497M", spec §1 [run]
FULL_ACTIVE_PARAMS = 157_406_976   # card "157M active", spec §1 [run]

# Size presets. n_head * head_dim must equal n_embd (the publisher's q_dim = n_embd and
# c_proj is [n_embd, n_embd]).
PRESETS = {
    # awkward small sizes: ffn and n_experts not powers of two, GQA group 2
    "tiny": dict(vocab=100, n_embd=64, n_layer=2, n_head=4, n_kv_head=2, head_dim=16,
                 ffn=40, n_experts=5, top_k=2),
    # different awkward sizes: hd 12 (6 frequencies), GQA group 3 like the full model,
    # 3 layers, vocab 77, ffn 52, 6 experts
    "tiny2": dict(vocab=77, n_embd=72, n_layer=3, n_head=6, n_kv_head=2, head_dim=12,
                  ffn=52, n_experts=6, top_k=2),
    # the published model (spec §2 table, depth 12, vocab 32768)
    "full": dict(vocab=32768, n_embd=768, n_layer=12, n_head=12, n_kv_head=4, head_dim=64,
                 ffn=2048, n_experts=8, top_k=2),
}


def preset_config(preset: Union[str, dict] = "tiny", **sizes) -> dict:
    """A size dict from a preset name (or a dict), with keyword overrides, validated."""
    c = dict(PRESETS[preset]) if isinstance(preset, str) else dict(preset)
    c.update(sizes)
    for k in ("vocab", "n_embd", "n_layer", "n_head", "n_kv_head", "head_dim", "ffn", "n_experts", "top_k"):
        if not isinstance(c.get(k), int) or c[k] < 1:
            raise ValueError(f"size {k}={c.get(k)!r} must be a positive integer")
    if c["n_head"] * c["head_dim"] != c["n_embd"]:
        raise ValueError(f"n_head*head_dim = {c['n_head'] * c['head_dim']} != n_embd {c['n_embd']}")
    if c["n_head"] % c["n_kv_head"]:
        raise ValueError(f"n_head {c['n_head']} is not a multiple of n_kv_head {c['n_kv_head']}")
    if c["head_dim"] % 2:
        raise ValueError(f"head_dim {c['head_dim']} must be even (half-split RoPE)")
    if c["top_k"] > c["n_experts"]:
        raise ValueError(f"top_k {c['top_k']} > n_experts {c['n_experts']}")
    return c


# --------------------------------------------------------------------------- names and shapes

def tensor_shapes(c: dict) -> "collections.OrderedDict[str, tuple]":
    """Every state_dict key (unprefixed) -> shape, in the order nn.Module.state_dict() of
    the published module tree yields them (spec §3 table; 279 keys at full size).
    Both tied names are listed."""
    d, hd = c["n_embd"], c["head_dim"]
    kv = c["n_kv_head"] * hd
    out = collections.OrderedDict()
    out["transformer.wte.weight"] = (c["vocab"], d)
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}."
        out[p + "ln1.weight"] = (d,)
        out[p + "ln2.weight"] = (d,)
        out[p + "attn.l_conv.weight"] = (d, 1, CONV_KERNEL)
        out[p + "attn.c_attn.weight"] = (d + 2 * kv, d)
        out[p + "attn.c_proj.weight"] = (d, d)
        out[p + "attn.rotary_emb.inv_freq"] = (hd // 2,)
        out[p + "moe.router.weight"] = (c["n_experts"], d)
        for e in range(c["n_experts"]):
            out[p + f"moe.experts.{e}.swiglu.w_v.weight"] = (2 * c["ffn"], d)
            out[p + f"moe.experts.{e}.c_proj.weight"] = (d, c["ffn"])
    out["transformer.ln_f.weight"] = (d,)
    out["lm_head.weight"] = (c["vocab"], d)
    return out


def module_paths(c: dict) -> List[str]:
    """Module names of the published tree in state_dict() traversal (pre-)order; used for
    the `_metadata` attribute torch's state_dict() attaches (every module, version 1)."""
    out = ["", "transformer", "transformer.wte", "transformer.h"]
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}"
        out += [p, p + ".ln1", p + ".ln2", p + ".attn", p + ".attn.l_conv", p + ".attn.c_attn",
                p + ".attn.c_proj", p + ".attn.rotary_emb", p + ".attn.q_norm", p + ".attn.k_norm",
                p + ".moe", p + ".moe.router", p + ".moe.experts"]
        for e in range(c["n_experts"]):
            q = f"{p}.moe.experts.{e}"
            out += [q, q + ".swiglu", q + ".swiglu.w_v", q + ".c_proj"]
    out += ["transformer.ln_f", "lm_head"]
    return out


def param_counts(preset_or_model) -> tuple:
    """(total, active) unique parameters: the tied embedding once, inv_freq buffers not
    counted, active = all non-expert parameters + top_k experts per layer (router and
    embedding fully counted). Full size: (497,145,600, 157,406,976) as on the card."""
    if isinstance(preset_or_model, Model):
        c = preset_or_model.cfg
    else:
        c = preset_config(preset_or_model)
    d, hd = c["n_embd"], c["head_dim"]
    expert = 2 * c["ffn"] * d + d * c["ffn"]
    dense_layer = 2 * d + d * CONV_KERNEL + (d + 2 * c["n_kv_head"] * hd) * d + d * d + c["n_experts"] * d
    common = c["vocab"] * d + d
    total = common + c["n_layer"] * (dense_layer + c["n_experts"] * expert)
    active = common + c["n_layer"] * (dense_layer + c["top_k"] * expert)
    return total, active


# --------------------------------------------------------------------------- loading

def load_state_dict(path: str, prefer: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Read a checkpoint like a user would: `path` is a directory (model.safetensors, else
    pytorch_model.bin; prefer="bin" reverses that) or one of those files."""
    if os.path.isdir(path):
        st = os.path.join(path, "model.safetensors")
        pb = os.path.join(path, "pytorch_model.bin")
        order = [pb, st] if prefer == "bin" else [st, pb]
        if prefer == "safetensors":
            order = [st]
        elif prefer == "bin":
            order = [pb]
        for f in order:
            if os.path.isfile(f):
                path = f
                break
        else:
            raise ValueError(f"{path}: no {' or '.join(os.path.basename(f) for f in order)}")
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]            # a train.py checkpoint ({"model": state_dict, ...})
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state_dict (got {type(obj).__name__})")
    return dict(obj)


# --------------------------------------------------------------------------- math pieces

def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float = RMS_EPS) -> torch.Tensor:
    """spec §4: x * rsqrt(mean(x^2, -1) + eps) * w, in fp32."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w


def layer_norm_noaffine(x: torch.Tensor, eps: float = QK_EPS) -> torch.Tensor:
    """spec §4 step 5: LayerNorm over the last axis, biased variance, no weight/bias."""
    mu = x.mean(dim=-1, keepdim=True)
    xc = x - mu
    var = xc.pow(2).mean(dim=-1, keepdim=True)
    return xc / torch.sqrt(var + eps)


def inv_freq_formula(head_dim: int, theta: float = ROPE_THETA) -> torch.Tensor:
    """The publisher's buffer value, computed the same way in fp32 (spec §3 table):
    1 / theta^(arange(0, hd, 2) / hd)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, fp64: bool = False,
                 dtype=torch.float32):
    """cos, sin of ang[t, j] = pos[t] * inv_freq[j], each [T, hd/2], in `dtype`.
    fp64=False: fp32 product and fp32 cos/sin (the publisher's RotaryEmbedding)."""
    if fp64:
        ang = positions.double()[:, None] * inv_freq.double()[None, :]
        return ang.cos().to(dtype), ang.sin().to(dtype)
    ang = positions.float()[:, None] * inv_freq.float()[None, :]
    return ang.cos(), ang.sin()


def rope_half_split(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Prefill form (spec §4 step 3): x [T, H, hd]; cos/sin [T, hd/2].
    x' = x * cat(cos, cos) + rotate_half(x) * cat(sin, sin), rotate_half(x) = cat(-x2, x1)."""
    half = x.shape[-1] // 2
    c = torch.cat([cos, cos], dim=-1)[:, None, :]
    s = torch.cat([sin, sin], dim=-1)[:, None, :]
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * c + rot * s


def rope_half_split_complex(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Decode form: pair (j, j+hd/2) as the complex number x_j + i x_{j+hd/2} times e^{i ang_j}.
    x [H, hd]; cos/sin [hd/2]."""
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half].contiguous(), x[..., half:].contiguous())
    r = z * torch.complex(cos, sin)
    return torch.cat([r.real, r.imag], dim=-1)


def causal_conv_prefill(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Depthwise causal conv over the whole sequence (spec §4 step 1).
    h [T, C], w [C, 1, K] -> u [T, C], u[t] = sum_j w[:, 0, j] * h[t - (K-1) + j], h[<0] = 0."""
    T, C = h.shape
    K = w.shape[-1]
    padded = torch.cat([h.new_zeros(K - 1, C), h], dim=0)
    u = h.new_zeros(T, C)
    for j in range(K):
        u = u + padded[j:j + T] * w[:, 0, j]
    return u


# --------------------------------------------------------------------------- model

class LayerW:
    __slots__ = ("ln1", "ln2", "conv", "wq", "wk", "wv", "wo", "inv_freq", "router", "w_gate",
                 "w_val", "w_down")


class Model:
    """linnet forward pass from a state dict (sizes from shapes; see module docstring)."""

    def __init__(self, state_dict: Dict[str, torch.Tensor], overrides: Optional[dict] = None):
        ov = dict(overrides or {})
        # compute dtype: float32 is the reference; "float64" exists to show that remaining
        # differences against another implementation are fp32 rounding only
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[ov.get("dtype", "float32")]
        sd = strip_prefixes(dict(state_dict))
        sd = {k: (v.to(self.dtype).contiguous() if v.is_floating_point() else v) for k, v in sd.items()}
        self.notes: List[str] = []
        used = set()
        get = tensor_getter(sd, used)

        # ---- tied embedding: either name, or both (then they must agree)
        wte = get("transformer.wte.weight", optional=True)
        head = get("lm_head.weight", optional=True)
        if wte is None and head is None:
            raise ValueError("checkpoint has neither transformer.wte.weight nor lm_head.weight")
        if wte is None:
            wte = head
        elif head is not None and (head.shape != wte.shape or not torch.equal(head, wte)):
            raise ValueError("transformer.wte.weight and lm_head.weight differ (they are tied)")
        if wte.dim() != 2:
            raise ValueError(f"embedding must be 2-D, got {tuple(wte.shape)}")
        V, d = wte.shape
        self.wte = wte

        ids = sorted({int(m.group(1)) for k in sd for m in [re.match(r"^transformer\.h\.(\d+)\.", k)] if m})
        if not ids or ids != list(range(len(ids))):
            raise ValueError(f"block indices {ids} are not 0..n-1")
        L = len(ids)

        # ---- head_dim from the inv_freq buffer (2 * its length); else 64 (spec §2)
        f0 = sd.get("transformer.h.0.attn.rotary_emb.inv_freq")
        if "head_dim" in ov:
            hd = int(ov["head_dim"])
        elif f0 is not None:
            hd = 2 * int(f0.shape[0])
        else:
            hd = DEFAULT_HEAD_DIM
            self.notes.append("no rotary_emb.inv_freq buffers: head_dim 64, theta 50000 assumed")
        if d % hd:
            raise ValueError(f"n_embd {d} is not a multiple of head_dim {hd}")
        H = d // hd
        rows = get("transformer.h.0.attn.c_attn.weight").shape[0]
        if (rows - d) <= 0 or (rows - d) % (2 * hd):
            raise ValueError(f"c_attn rows {rows} do not split as {d} + 2*n_kv*{hd}")
        Hkv = (rows - d) // (2 * hd)
        if H % Hkv:
            raise ValueError(f"n_head {H} is not a multiple of n_kv_head {Hkv}")
        E = get("transformer.h.0.moe.router.weight").shape[0]
        F_ = get("transformer.h.0.moe.experts.0.c_proj.weight").shape[1]
        top_k = int(ov.get("top_k", TOP_K))
        if not 1 <= top_k <= E:
            raise ValueError(f"top_k {top_k} not in 1..{E}")
        self.rms_eps = float(ov.get("rms_eps", RMS_EPS))
        self.qk_eps = float(ov.get("qk_eps", QK_EPS))
        self.rope_fp64 = ov.get("rope_angles", "fp32") == "fp64" or self.dtype == torch.float64
        theta = ov.get("rope_theta")
        self.cfg = dict(vocab=V, n_embd=d, n_layer=L, n_head=H, n_kv_head=Hkv, head_dim=hd,
                        ffn=F_, n_experts=E, top_k=top_k)
        self.vocab = V
        self.final_norm = get("transformer.ln_f.weight", (d,))

        self.layers: List[LayerW] = []
        kv = Hkv * hd
        for i in range(L):
            p = f"transformer.h.{i}."
            lw = LayerW()
            lw.ln1 = get(p + "ln1.weight", (d,))
            lw.ln2 = get(p + "ln2.weight", (d,))
            lw.conv = get(p + "attn.l_conv.weight", (d, 1, CONV_KERNEL))
            qkv = get(p + "attn.c_attn.weight", (d + 2 * kv, d))
            lw.wq, lw.wk, lw.wv = qkv[:d], qkv[d:d + kv], qkv[d + kv:]
            lw.wo = get(p + "attn.c_proj.weight", (d, d))
            fb = get(p + "attn.rotary_emb.inv_freq", (hd // 2,), optional=True)
            if theta is not None:
                lw.inv_freq = inv_freq_formula(hd, float(theta))
            elif fb is not None:
                lw.inv_freq = fb
            else:
                lw.inv_freq = inv_freq_formula(hd, ROPE_THETA)
            lw.router = get(p + "moe.router.weight", (E, d))
            g, v_, dn = [], [], []
            for e in range(E):
                wv = get(p + f"moe.experts.{e}.swiglu.w_v.weight", (2 * F_, d))
                g.append(wv[:F_])          # gate (silu) = first chunk
                v_.append(wv[F_:])         # value = second chunk
                dn.append(get(p + f"moe.experts.{e}.c_proj.weight", (d, F_)))
            lw.w_gate, lw.w_val, lw.w_down = g, v_, dn
            self.layers.append(lw)
        extra = sorted(set(sd) - used)
        if extra:
            raise ValueError(f"unexpected tensors in checkpoint: {extra[:5]}{' ...' if len(extra) > 5 else ''}")

    @classmethod
    def from_dir(cls, path: str, overrides: Optional[dict] = None, prefer: Optional[str] = None) -> "Model":
        return cls(load_state_dict(path, prefer), overrides)

    # ---------------------------------------------------------------- prefill
    def _route(self, lw: LayerW, h2: torch.Tensor):
        logits = h2 @ lw.router.T
        probs = torch.softmax(logits, dim=-1)
        w, idx = torch.topk(probs, self.cfg["top_k"], dim=-1)
        w = w / w.sum(dim=-1, keepdim=True)
        return logits, w, idx

    def forward(self, tokens: Sequence[int], trace: Optional[list] = None,
                _qk_norm_before_rope: bool = False) -> torch.Tensor:
        """Logits [T, vocab] for all positions at once. `_qk_norm_before_rope` is a
        deliberately WRONG variant used by the self-test."""
        c = self.cfg
        toks = self._check_tokens(tokens)
        T = toks.shape[0]
        H, Hkv, hd = c["n_head"], c["n_kv_head"], c["head_dim"]
        G = H // Hkv
        x = self.wte[toks]
        pos = torch.arange(T)
        mask = torch.full((T, T), float("-inf"), dtype=self.dtype).triu(1)
        for i, lw in enumerate(self.layers):
            h = rms_norm(x, lw.ln1, self.rms_eps)
            u = causal_conv_prefill(h, lw.conv)
            q = (u @ lw.wq.T).view(T, H, hd)
            k = (u @ lw.wk.T).view(T, Hkv, hd)
            v = (u @ lw.wv.T).view(T, Hkv, hd)
            cos, sin = rope_cos_sin(pos, lw.inv_freq, self.rope_fp64, self.dtype)
            if _qk_norm_before_rope:
                q = rope_half_split(layer_norm_noaffine(q, self.qk_eps), cos, sin)
                k = rope_half_split(layer_norm_noaffine(k, self.qk_eps), cos, sin)
            else:
                q = layer_norm_noaffine(rope_half_split(q, cos, sin), self.qk_eps)
                k = layer_norm_noaffine(rope_half_split(k, cos, sin), self.qk_eps)
            k = k.repeat_interleave(G, dim=1)          # [T, H, hd]
            v = v.repeat_interleave(G, dim=1)
            scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
            y = torch.einsum("hts,shd->thd", torch.softmax(scores, dim=-1), v).reshape(T, H * hd)
            x = x + y @ lw.wo.T
            after_attention = x
            h2 = rms_norm(x, lw.ln2, self.rms_eps)
            rlogits, w, idx = self._route(lw, h2)
            out = torch.zeros_like(h2)
            for e in range(c["n_experts"]):
                rows, slots = (idx == e).nonzero(as_tuple=True)
                if rows.numel() == 0:
                    continue
                z = h2[rows]
                a = torch.nn.functional.silu(z @ lw.w_gate[e].T) * (z @ lw.w_val[e].T)
                out.index_add_(0, rows, (a @ lw.w_down[e].T) * w[rows, slots][:, None])
            x = x + out
            if trace is not None:
                trace.append({"layer": i, "attention": after_attention.clone(), "hidden": x.clone(),
                              "experts": idx.clone(), "weights": w.clone(),
                              "router_logits": rlogits.clone()})
        x = rms_norm(x, self.final_norm, self.rms_eps)
        return x @ self.wte.T

    # ---------------------------------------------------------------- decode
    def new_state(self) -> "DecodeState":
        return DecodeState(self)

    def decode(self, tokens: Sequence[int]) -> torch.Tensor:
        """Logits [T, vocab], one token at a time through KV cache + conv state."""
        toks = self._check_tokens(tokens)
        st = self.new_state()
        return torch.stack([st.step(int(t)) for t in toks])

    def _check_tokens(self, tokens) -> torch.Tensor:
        return check_tokens(tokens, self.vocab)


class DecodeState:
    """Per-layer KV cache (post-RoPE, post-LayerNorm K; V) and conv state (the last K-1
    ln1 outputs, oldest first, zeros before the sequence start)."""

    def __init__(self, model: Model):
        self.m = model
        c = model.cfg
        self.pos = 0
        self.conv = [torch.zeros(CONV_KERNEL - 1, c["n_embd"], dtype=model.dtype) for _ in model.layers]
        self.k: List[List[torch.Tensor]] = [[] for _ in model.layers]   # each [Hkv, hd]
        self.v: List[List[torch.Tensor]] = [[] for _ in model.layers]

    def step(self, token: int) -> torch.Tensor:
        m, c = self.m, self.m.cfg
        H, Hkv, hd, k_top = c["n_head"], c["n_kv_head"], c["head_dim"], c["top_k"]
        G = H // Hkv
        x = m.wte[token].clone()
        for i, lw in enumerate(m.layers):
            h = rms_norm(x, lw.ln1, m.rms_eps)
            # conv: taps 0..K-2 on the stored past ln1 outputs, tap K-1 on the current one
            u = lw.conv[:, 0, CONV_KERNEL - 1] * h
            for j in range(CONV_KERNEL - 1):
                u = u + lw.conv[:, 0, j] * self.conv[i][j]
            self.conv[i] = torch.cat([self.conv[i][1:], h[None, :]], dim=0)
            q = torch.mv(lw.wq, u).view(H, hd)
            k = torch.mv(lw.wk, u).view(Hkv, hd)
            v = torch.mv(lw.wv, u).view(Hkv, hd)
            cos, sin = rope_cos_sin(torch.tensor([self.pos]), lw.inv_freq, m.rope_fp64, m.dtype)
            q = layer_norm_noaffine(rope_half_split_complex(q, cos[0], sin[0]), m.qk_eps)
            k = layer_norm_noaffine(rope_half_split_complex(k, cos[0], sin[0]), m.qk_eps)
            self.k[i].append(k)
            self.v[i].append(v)
            K = torch.stack(self.k[i])      # [S, Hkv, hd]
            Vc = torch.stack(self.v[i])
            y = torch.empty(H, hd, dtype=m.dtype)
            for hh in range(H):
                g = hh // G
                s = torch.mv(K[:, g, :], q[hh]) / math.sqrt(hd)
                y[hh] = torch.mv(Vc[:, g, :].T, torch.softmax(s, dim=0))
            x = x + torch.mv(lw.wo, y.reshape(-1))
            h2 = rms_norm(x, lw.ln2, m.rms_eps)
            p = torch.softmax(torch.mv(lw.router, h2), dim=0)
            order = torch.sort(p, descending=True, stable=True).indices[:k_top]
            wsel = p[order] / p[order].sum()
            out = torch.zeros_like(h2)
            for slot in range(k_top):
                e = int(order[slot])
                a = torch.nn.functional.silu(torch.mv(lw.w_gate[e], h2)) * torch.mv(lw.w_val[e], h2)
                out = out + wsel[slot] * torch.mv(lw.w_down[e], a)
            x = x + out
        x = rms_norm(x, m.final_norm, m.rms_eps)
        self.pos += 1
        return torch.mv(m.wte, x)


# --------------------------------------------------------------------------- routing margins

def min_margins(model: Model, token_lists) -> dict:
    """Smallest top-k router margin over every token list, token and layer.

    min_margin:       (also under "topk_margin", the key families.py reads) router LOGIT gap between the k-th and (k+1)-th expert (selection is
                      by softmax probability, which is monotone in the logit)
    min_prob_margin:  the same gap in softmax probability
    min_weight_gap:   smallest |w_1 - w_2| among the renormalised top-k weights (info)
    where:            (list index, layer, position) of min_margin; total: tokens*layers"""
    k = model.cfg["top_k"]
    E = model.cfg["n_experts"]
    best = {"min_margin": math.inf, "min_prob_margin": math.inf, "min_weight_gap": math.inf,
            "where": None, "total": 0}
    for li, toks in enumerate(token_lists):
        trace = []
        model.forward(toks, trace=trace)
        for t in trace:
            logits = t["router_logits"]
            probs = torch.softmax(logits, dim=-1)
            best["total"] += logits.shape[0]
            if k < E:
                lt = torch.sort(logits, dim=-1, descending=True).values
                pt = torch.sort(probs, dim=-1, descending=True).values
                gap = lt[:, k - 1] - lt[:, k]
                j = int(gap.argmin())
                if float(gap[j]) < best["min_margin"]:
                    best["min_margin"] = float(gap[j])
                    best["where"] = (li, t["layer"], j)
                best["min_prob_margin"] = min(best["min_prob_margin"], float((pt[:, k - 1] - pt[:, k]).min()))
            if k >= 2:
                w = t["weights"]
                best["min_weight_gap"] = min(best["min_weight_gap"], float((w[:, :-1] - w[:, 1:]).abs().min()))
    best["topk_margin"] = best["min_margin"]
    return best


# --------------------------------------------------------------------------- fixtures

def init_tensor(name: str, shape, c: dict, seed: int) -> torch.Tensor:
    """Deterministic, well-conditioned fp32 values for unprefixed key `name`.

    Embedding std 2/sqrt(d) (tied logits of std ~2); norm weights U(0.8, 1.2); conv taps
    U(-1, 1) with +0.5 on the current tap (all three taps matter); projections N(0, 1/fan_in)
    (output projections halved); router N(0, 1/d) so router logits have std ~1;
    inv_freq = the publisher's exact fp32 formula."""
    shape = tuple(shape)
    if name.endswith("rotary_emb.inv_freq"):
        return inv_freq_formula(2 * shape[0], ROPE_THETA)
    r = tensor_rng(seed, name)
    d = c["n_embd"]

    def normal(std):
        return torch.from_numpy(r.standard_normal(shape, dtype=np.float32) * np.float32(std))

    if name in ("transformer.wte.weight", "lm_head.weight"):
        return normal(2.0 / math.sqrt(d))
    if name.endswith("ln1.weight") or name.endswith("ln2.weight") or name.endswith("ln_f.weight"):
        return torch.from_numpy(r.uniform(0.8, 1.2, size=shape).astype(np.float32))
    if name.endswith("l_conv.weight"):
        w = r.uniform(-1.0, 1.0, size=shape).astype(np.float32)
        w[..., -1] += np.float32(0.5)
        return torch.from_numpy(w)
    std = 1.0 / math.sqrt(shape[-1])
    if name.endswith("c_proj.weight"):
        std *= 0.5
    return normal(std)


_TORCH_DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def build_state_dict(c: dict, seed: int, dtype: str = "F32") -> Dict[str, torch.Tensor]:
    """Unprefixed fp32 state dict (values already rounded to `dtype`, except inv_freq)
    with lm_head.weight the SAME tensor object as transformer.wte.weight."""
    out = collections.OrderedDict()
    for name, shape in tensor_shapes(c).items():
        if name == "lm_head.weight":
            out[name] = out["transformer.wte.weight"]
            continue
        t = init_tensor(name, shape, c, seed)
        if dtype != "F32" and not name.endswith("inv_freq"):
            t = t.to(_TORCH_DT[dtype]).float()
        out[name] = t
    return out


def upload_config(c: dict, style: str) -> dict:
    """config.json as the publisher ships it (spec §2; hf_upload.py step 2).

    "auto":   hf_upload.py's regenerated file: LLMConfig(depth = n_embd // 64) WITHOUT the
              vocab, so vocab_size 50257 and every size derived from that depth (for the
              tiny presets that means wrong n_head/n_kv_head/ffn_dim too), torch_dtype
              bfloat16. The uploader only regenerates when the state_dict has the key
              "transformer.wte.weight"; otherwise it ships the repo's static hf/config.json.
    "static": the repo's hf/config.json (depth 12, vocab 32768, bfloat16) whatever the
              tensors say."""
    if style == "auto":
        depth = max(1, c["n_embd"] // 64)       # train/LLMConfig arithmetic, as hf_upload.py does
        n_embd = depth * 64
        return {
            "model_type": "linnet", "architectures": ["LLM"], "depth": depth, "n_layer": depth,
            "n_head": depth, "n_kv_head": max(1, depth // 3) if depth % 3 == 0 else max(1, depth // 2),
            "n_embd": n_embd, "ffn_dim": (int(8 / 3 * n_embd) + 63) // 64 * 64, "block_size": 1024,
            "vocab_size": 50257, "n_experts": 8, "n_active_experts": 2, "rope_base": 50000,
            "torch_dtype": "bfloat16", "pipeline_tag": "text-generation",
        }
    if style == "static":
        return {
            "model_type": "linnet", "architectures": ["LLM"], "depth": 12, "block_size": 1024,
            "vocab_size": 32768, "n_experts": 8, "n_active_experts": 2, "rope_base": 50000,
            "attention": "GQA+QKNorm+FlashAttention", "ffn": "SwiGLU", "normalization": "RMSNorm",
            "sequence_mixing": "CausalDepthwiseConv1d_kernel3", "sparsity": "MoE_top2_of_8",
            "optimizer": "Muon+AdamW", "torch_dtype": "bfloat16", "transformers_version": "n/a",
            "pipeline_tag": "text-generation",
        }
    raise ValueError(f"config style {style!r}: expected auto, static, upload or none")


TOKENIZER_CONFIG = {  # spec §5 hf/tokenizer_config.json
    "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1024, "unk_token": None,
    "bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|padding|>",
    "add_prefix_space": False, "trim_offsets": True,
}


def _save_bin(path: str, sd: "collections.OrderedDict", c: dict, prefix: str) -> None:
    """torch.save of the flat state_dict as nn.Module.state_dict() returns it: an
    OrderedDict with a `_metadata` attribute (module path -> {"version": 1}). Written in a
    scratch directory under the final basename (torch names the zip's root folder after
    the file) and renamed into place."""
    out = collections.OrderedDict((prefix + k, v) for k, v in sd.items())
    meta = collections.OrderedDict()
    if prefix:
        meta[""] = {"version": 1}          # the torch.compile / DDP wrapper module
    pre = prefix[:-1] if prefix.endswith(".") else prefix
    for m in module_paths(c):
        name = pre if m == "" and pre else (f"{pre}.{m}" if pre and m else m)
        meta[name] = {"version": 1}
    out._metadata = meta
    scratch = tempfile.mkdtemp(prefix=".bin_", dir=os.path.dirname(path))
    try:
        tmp = os.path.join(scratch, os.path.basename(path))
        torch.save(out, tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_fixture(out_dir: str, preset: Union[str, dict] = "tiny", seed: int = 1, *,
                  prefix: str = "", weights: str = "both", dtype: str = "F32",
                  safetensors_tied: str = "lm_head", config: str = "upload",
                  tokenizer_config: bool = True, check_tokens=None, sizes: Optional[dict] = None,
                  margin_min: float = MARGIN_MIN, verbose: bool = False) -> dict:
    """Write the publisher's files for a random model into out_dir.

    weights:          "both" (default), "safetensors" or "bin"
    dtype:            "F32" (published), "F16" or "BF16": every weight is rounded to it and
                      stored in it in both files (inv_freq buffers stay F32)
    prefix:           prepended to every key (e.g. "_orig_mod.")
    safetensors_tied: "lm_head" (HF converter: keeps the sorted-first tied name and drops
                      transformer.wte.weight), "wte" (keeps wte only) or "both" (duplicated)
    config:           "upload" (hf_upload.py: "auto" if the un-prefixed wte key is present,
                      else "static"), "auto", "static" or "none" -- see upload_config()
    check_tokens:     token lists; seeds whose min router logit margin < margin_min are
                      rejected and seed+1 tried (up to 50 times)
    Returns {"seed", "files", "params", "active", "cfg", "margins"}."""
    c = preset_config(preset, **(sizes or {}))
    if weights not in ("both", "safetensors", "bin"):
        raise ValueError(f"weights={weights!r}")
    if dtype not in _TORCH_DT:
        raise ValueError(f"dtype={dtype!r}")
    if safetensors_tied not in ("lm_head", "wte", "both"):
        raise ValueError(f"safetensors_tied={safetensors_tied!r}")
    os.makedirs(out_dir, exist_ok=True)
    margins = None
    sd = None
    if check_tokens:
        for _ in range(MAX_TRIES):
            sd = build_state_dict(c, seed, dtype)
            margins = min_margins(Model(sd, {"top_k": c["top_k"]}), check_tokens)
            if verbose:
                print(f"linnet fixture: seed {seed}: min router logit margin {margins['min_margin']:.3g}",
                      file=sys.stderr)
            if margins["min_margin"] >= margin_min:
                break
            seed += 1
        else:
            raise ValueError(f"no seed passes the routing margin check after {MAX_TRIES} tries")
    shapes = tensor_shapes(c)
    files = []
    if weights in ("both", "bin"):
        if sd is None:
            sd = build_state_dict(c, seed, dtype)
        bsd = collections.OrderedDict()
        for k, v in sd.items():
            if k == "lm_head.weight":
                bsd[k] = bsd["transformer.wte.weight"]       # one shared storage
            elif k.endswith("inv_freq") or dtype == "F32":
                bsd[k] = v
            else:
                bsd[k] = v.to(_TORCH_DT[dtype])
        _save_bin(os.path.join(out_dir, "pytorch_model.bin"), bsd, c, prefix)
        files.append("pytorch_model.bin")
        del bsd
    if weights in ("both", "safetensors"):
        drop = {"lm_head": "transformer.wte.weight", "wte": "lm_head.weight", "both": None}[safetensors_tied]
        tensors = {}
        for name, shape in shapes.items():
            if name == drop:
                continue
            src = "transformer.wte.weight" if name == "lm_head.weight" else name
            tag = "F32" if name.endswith("inv_freq") else dtype
            if sd is not None:
                tensors[prefix + name] = LazyTensor(tag, shape, (lambda v=sd[src]: v))
            else:   # stream: one tensor in memory at a time
                tensors[prefix + name] = LazyTensor(
                    tag, shape, (lambda n=src, s=shapes[src]: init_tensor(n, s, c, seed)))
        write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, metadata={"format": "pt"})
        files.append("model.safetensors")
    if config != "none":
        style = config
        if style == "upload":
            style = "auto" if not prefix else "static"
        write_json(os.path.join(out_dir, "config.json"), upload_config(c, style))
        files.append("config.json")
    if tokenizer_config:
        write_json(os.path.join(out_dir, "tokenizer_config.json"), TOKENIZER_CONFIG)
        files.append("tokenizer_config.json")
    total, active = param_counts(c)
    return {"seed": seed, "files": files, "params": total, "active": active, "cfg": c, "margins": margins}


# --------------------------------------------------------------------------- CLI

def _parse_lists(text: str):
    return [[int(x) for x in part.split(",") if x.strip()] for part in text.split(";") if part.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="linnet-497M reference and fixture generator")
    sub = ap.add_subparsers(dest="cmd", required=True)
    fx = sub.add_parser("fixture", help="write a random-weight checkpoint directory")
    fx.add_argument("--out", required=True)
    fx.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    fx.add_argument("--seed", type=int, default=1)
    fx.add_argument("--prefix", default="")
    fx.add_argument("--dtype", choices=sorted(_TORCH_DT), default="F32")
    fx.add_argument("--weights", choices=["both", "safetensors", "bin"], default="both")
    fx.add_argument("--safetensors-tied", choices=["lm_head", "wte", "both"], default="lm_head")
    fx.add_argument("--config", choices=["upload", "auto", "static", "none"], default="upload")
    fx.add_argument("--check-tokens", default=None, metavar="'1,2,3;4,5'")
    lg = sub.add_parser("logits", help="reference logits as raw float32 LE [T, vocab]")
    lg.add_argument("--model", required=True)
    lg.add_argument("--tokens", required=True)
    lg.add_argument("--out", required=True)
    lg.add_argument("--decode", action="store_true")
    lg.add_argument("--prefer", choices=["safetensors", "bin"], default=None)
    ct = sub.add_parser("counts", help="print (total, active) parameter counts")
    ct.add_argument("--preset", choices=sorted(PRESETS), default="full")
    a = ap.parse_args(argv)
    t0 = time.time()
    try:
        if a.cmd == "fixture":
            info = write_fixture(a.out, a.preset, a.seed, prefix=a.prefix, weights=a.weights,
                                 dtype=a.dtype, safetensors_tied=a.safetensors_tied, config=a.config,
                                 check_tokens=_parse_lists(a.check_tokens) if a.check_tokens else None,
                                 verbose=True)
            print(f"seed {info['seed']}")
            print(f"params {info['params']:,} (active {info['active']:,}); wrote "
                  f"{', '.join(info['files'])} to {a.out} in {time.time() - t0:.1f}s")
        elif a.cmd == "logits":
            m = Model.from_dir(a.model, prefer=a.prefer)
            return write_logits(m, a.tokens, a.decode, a.out, "linnet")
        else:
            print("%d %d" % param_counts(a.preset))
    except ValueError as e:
        print(f"linnet: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
