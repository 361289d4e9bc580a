#!/usr/bin/python3
"""Independent float32 PyTorch reference for the moe100m-physics family.

Written from shared/seeds/specs/moe100m-physics-tinybpe.md (cited below as "spec §N").
It is the oracle the compiled executables are compared against, so it favours plain,
explicit math over speed. Two separate code paths compute the same logits:

  * `PhysicsModel.forward(tokens)`   prefill: all T positions at once (matrix form,
                                     causal mask, per-expert token grouping), and
  * `PhysicsModel.decode(tokens)`    token by token through a KV cache (vector form,
                                     RoPE as complex rotation, per-token expert loop),

and the self-test checks that they agree, so the reference is cross-checked too.

MoE is DROPLESS (spec §4 "Capacity dropping in the reference": the scaffold's grouped
backend drops tokens over capacity at prefill; the "true" model does not).
"""
from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from reference_common import (KVCacheBase, TokenByTokenDecode, check_tokens,  # noqa: E402
                              read_config_json, strip_prefixes, tensor_getter)
from safetensors_io import read_safetensors  # noqa: E402

# Settings the tensor shapes cannot show (spec §2 last paragraph): card values for
# rope_partial / top_k, scaffold defaults for the rest.
SETTING_DEFAULTS = {
    "rope_partial": 32,
    "rope_theta": 10000.0,
    "rms_eps": 1e-6,
    "mup_base_d": 512,
    "top_k": 2,
}

# Renormalisation epsilon of the top-k sigmoid weights (spec §4, SigmoidRouter).
ROUTER_RENORM_EPS = 1e-9


def stack_legacy_experts(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Legacy "bmm" layout -> grouped layout (spec §3 last paragraph).

    blocks.{i}.ffn.routed_experts.{e}.{gate,up,down}.weight are stacked along a new
    leading expert axis into blocks.{i}.ffn.{gate,up,down}.
    """
    pat = re.compile(r"^(blocks\.\d+\.ffn)\.routed_experts\.(\d+)\.(gate|up|down)\.weight$")
    groups: Dict[tuple, Dict[int, torch.Tensor]] = {}
    out = {}
    for k, v in sd.items():
        m = pat.match(k)
        if m:
            groups.setdefault((m.group(1), m.group(3)), {})[int(m.group(2))] = v
        else:
            out[k] = v
    for (prefix, which), experts in groups.items():
        n = len(experts)
        if sorted(experts) != list(range(n)):
            raise ValueError(f"{prefix}.routed_experts: expert indices {sorted(experts)} are not 0..{n - 1}")
        key = f"{prefix}.{which}"
        if key in out:
            raise ValueError(f"{key}: both stacked and legacy per-expert tensors are present")
        out[key] = torch.stack([experts[e] for e in range(n)], dim=0)
    return out


# --------------------------------------------------------------------------- math pieces

def rms_norm(x: torch.Tensor, weight: Optional[torch.Tensor], eps: float) -> torch.Tensor:
    """RMSNorm over the last axis, in fp32, then times `weight` (spec §4: norm computed
    in fp32, cast back to the input dtype, THEN multiplied by the weight)."""
    x32 = x.float()
    y = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    y = y.to(x.dtype)
    return y if weight is None else y * weight


def rope_inv_freq(rope_dims: int, theta: float, dtype=torch.float64) -> torch.Tensor:
    """inv_freq[j] = theta^(-2j/rope_dims), j = 0 .. rope_dims/2 - 1 (spec §4).

    Note: frequencies are based on the ROTATED span (rope_dims), not on head_dim."""
    j = torch.arange(rope_dims // 2, dtype=torch.float64)
    inv = torch.pow(torch.tensor(float(theta), dtype=torch.float64), -2.0 * j / rope_dims)
    return inv.to(dtype)


def rope_angles(positions: torch.Tensor, rope_dims: int, theta: float, fp32_angles: bool) -> torch.Tensor:
    """Angles [len(positions), rope_dims/2].

    Default: computed in float64 (the exact value, rounded once when cos/sin are cast
    to fp32). fp32_angles=True mirrors the scaffold, which builds inv_freq, the
    positions and their outer product in float32; the two differ by < 1e-4 rad at
    position 1024 and the self-test checks that both give the same logits."""
    if fp32_angles:
        inv = 1.0 / (float(theta) ** (torch.arange(0, rope_dims, 2, dtype=torch.float32) / rope_dims))
        return torch.outer(positions.to(torch.float32), inv).double()
    return torch.outer(positions.to(torch.float64), rope_inv_freq(rope_dims, theta))


def rope_interleaved_prefill(x: torch.Tensor, angles: torch.Tensor, rope_dims: int) -> torch.Tensor:
    """Partial RoPE, interleaved pairs, written with explicit cos/sin (spec §4).

    x: [T, H, hd]; angles: [T, rope_dims/2]. Dims [0:rope_dims] are rotated pairwise,
    pair j = (2j, 2j+1):
        out[2j]   = x[2j]   * cos(a_j) - x[2j+1] * sin(a_j)
        out[2j+1] = x[2j+1] * cos(a_j) + x[2j]   * sin(a_j)
    dims [rope_dims:hd] pass through unchanged.
    """
    if rope_dims == 0:
        return x
    cos = torch.cos(angles).to(x.dtype)[:, None, :]   # [T, 1, rd/2]
    sin = torch.sin(angles).to(x.dtype)[:, None, :]
    even = x[..., 0:rope_dims:2]
    odd = x[..., 1:rope_dims:2]
    rot_even = even * cos - odd * sin
    rot_odd = odd * cos + even * sin
    rotated = torch.stack((rot_even, rot_odd), dim=-1).flatten(-2)   # re-interleave
    return torch.cat((rotated, x[..., rope_dims:]), dim=-1)


def rope_interleaved_complex(x: torch.Tensor, angles: torch.Tensor, rope_dims: int) -> torch.Tensor:
    """Same rotation as `rope_interleaved_prefill`, written as a complex product
    (x[2j] + i x[2j+1]) * exp(i a_j). Used by the decode path. x: [H, hd]; angles: [rd/2]."""
    if rope_dims == 0:
        return x
    pairs = x[:, :rope_dims].reshape(x.shape[0], rope_dims // 2, 2).contiguous()
    z = torch.view_as_complex(pairs)
    rot = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)
    out = torch.view_as_real(z * rot[None, :]).reshape(x.shape[0], rope_dims)
    return torch.cat((out, x[:, rope_dims:]), dim=-1)


def swiglu(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """down(silu(gate x) * up x) with nn.Linear-layout weights ([out, in])."""
    return (torch.nn.functional.silu(x @ gate.t()) * (x @ up.t())) @ down.t()


# --------------------------------------------------------------------------- model

@dataclass
class LayerWeights:
    attn_norm: torch.Tensor
    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    wo: torch.Tensor
    q_norm_w: torch.Tensor     # [H, hd]
    q_norm_g: torch.Tensor     # [H, 1]
    k_norm_w: torch.Tensor     # [Hkv, hd]
    k_norm_g: torch.Tensor     # [Hkv, 1]
    smear: Optional[torch.Tensor]   # [Hkv] or None (smear_gate off)
    ffn_norm: torch.Tensor
    is_moe: bool
    # dense layer
    gate: Optional[torch.Tensor] = None
    up: Optional[torch.Tensor] = None
    down: Optional[torch.Tensor] = None
    # MoE layer
    router_w: Optional[torch.Tensor] = None     # [E, D]
    router_bias: Optional[torch.Tensor] = None  # [E]
    e_gate: Optional[torch.Tensor] = None       # [E, F, D]
    e_up: Optional[torch.Tensor] = None         # [E, F, D]
    e_down: Optional[torch.Tensor] = None       # [E, D, F]
    s_gate: Optional[torch.Tensor] = None       # shared expert (None when absent)
    s_up: Optional[torch.Tensor] = None
    s_down: Optional[torch.Tensor] = None


@dataclass
class Dims:
    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_experts: int
    d_ff: int
    moe_first_layer: int
    rope_dims: int
    rope_theta: float
    eps: float
    mup_base_d: float
    top_k: int
    logit_scale: float
    tied: bool
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"V={self.vocab} D={self.d_model} L={self.n_layers} (moe from {self.moe_first_layer}) "
                f"heads={self.n_heads}/{self.n_kv_heads}x{self.head_dim} rope={self.rope_dims}@{self.rope_theta:g} "
                f"eps={self.eps:g} E={self.n_experts} top{self.top_k} F={self.d_ff} "
                f"logit_scale={self.logit_scale:.6f}{'' if self.tied else ' untied'}")


# config.json keys checked against the tensor shapes before its settings are trusted.
_SHAPE_KEYS = ("vocab_size", "d_model", "n_layers", "n_q_heads", "n_kv_heads", "head_dim",
               "n_routed_experts", "d_ff", "moe_first_layer")


class PhysicsModel(TokenByTokenDecode):
    """moe100m-physics forward pass from a (prefix-stripped) state dict + config.
    Key prefixes "_orig_mod." / "module." (torch.compile, DDP; spec §3) are stripped."""

    def __init__(self, state_dict: Dict[str, torch.Tensor], config: Optional[dict] = None,
                 overrides: Optional[dict] = None, fp32_rope_angles: bool = False):
        sd = stack_legacy_experts(strip_prefixes(dict(state_dict)))
        sd = {k: (v.float().contiguous() if v.is_floating_point() else v) for k, v in sd.items()}
        self.fp32_rope_angles = fp32_rope_angles
        self._used = set()
        get = tensor_getter(sd, self._used)

        # ---- sizes from shapes (spec §2 table)
        embed = get("embed.weight")
        if embed.dim() != 2:
            raise ValueError(f"embed.weight must be 2-D, got {tuple(embed.shape)}")
        V, D = embed.shape
        block_ids = sorted({int(m.group(1)) for k in sd for m in [re.match(r"^blocks\.(\d+)\.", k)] if m})
        if block_ids != list(range(len(block_ids))) or not block_ids:
            raise ValueError(f"block indices {block_ids} are not 0..n-1")
        L = len(block_ids)
        qn = get("blocks.0.attn.q_norm.weight")
        kn = get("blocks.0.attn.k_norm.weight")
        if qn.dim() != 2 or kn.dim() != 2 or qn.shape[1] != kn.shape[1]:
            raise ValueError(f"q_norm.weight {tuple(qn.shape)} / k_norm.weight {tuple(kn.shape)} are not [heads, head_dim]")
        H, hd = qn.shape
        Hkv = kn.shape[0]
        if H % Hkv != 0:
            raise ValueError(f"n_heads {H} is not a multiple of n_kv_heads {Hkv}")
        moe_layers = [i for i in range(L) if f"blocks.{i}.ffn.router.w" in sd]
        moe_first = moe_layers[0] if moe_layers else L
        if moe_layers != list(range(moe_first, L)):
            raise ValueError(f"MoE layers {moe_layers} are not a suffix of 0..{L - 1}")
        E = sd[f"blocks.{moe_first}.ffn.router.w"].shape[0] if moe_layers else 0
        if moe_layers and f"blocks.{moe_first}.ffn.shared_expert.gate.weight" in sd:
            F = sd[f"blocks.{moe_first}.ffn.shared_expert.gate.weight"].shape[0]
        elif moe_layers:
            F = sd[f"blocks.{moe_first}.ffn.gate"].shape[1]
        else:
            F = sd["blocks.0.ffn.gate.weight"].shape[0]

        # ---- settings shapes cannot show (spec §2; DESIGN §3 "Settings the tensors cannot show")
        notes: List[str] = []
        cfg = dict(config or {})
        derived = {"vocab_size": V, "d_model": D, "n_layers": L, "n_q_heads": H, "n_kv_heads": Hkv,
                   "head_dim": hd, "n_routed_experts": E, "d_ff": F, "moe_first_layer": moe_first}
        if not moe_layers:
            derived.pop("n_routed_experts")
        mismatch = [f"{k}={cfg[k]} (tensors say {derived[k]})" for k in _SHAPE_KEYS
                    if k in cfg and k in derived and cfg[k] != derived[k]]
        trust_cfg = not mismatch
        if mismatch:
            notes.append("config.json disagrees with the tensors (" + ", ".join(mismatch) +
                         "): its rope/eps/scale/top_k settings are ignored, defaults used")
        settings = {}
        for key, default in SETTING_DEFAULTS.items():
            if overrides and key in overrides:
                settings[key] = overrides[key]
                notes.append(f"{key}={overrides[key]} (override)")
            elif trust_cfg and key in cfg and cfg[key] is not None:
                settings[key] = cfg[key]
            else:
                settings[key] = default
                notes.append(f"{key}={default} (default: not in config.json)" if trust_cfg
                             else f"{key}={default} (default)")
        rope_dims = int(settings["rope_partial"])
        if rope_dims < 0 or rope_dims > hd or rope_dims % 2:
            raise ValueError(f"rope_partial={rope_dims} must be even and within head_dim {hd}")
        top_k = int(settings["top_k"])
        if moe_layers and not (1 <= top_k <= E):
            raise ValueError(f"top_k={top_k} must be in 1..n_experts={E}")
        mup_base_d = float(settings["mup_base_d"])

        head = get("lm_head.weight", (V, D), optional=True)
        self.head = embed if head is None else head
        self.embed = embed
        self.final_norm = get("final_norm.weight", (D,))

        # ---- per-layer tensors (spec §3)
        self.layers: List[LayerWeights] = []
        for i in range(L):
            p = f"blocks.{i}."
            lw = LayerWeights(
                attn_norm=get(p + "attn_norm.weight", (D,)),
                wq=get(p + "attn.q_proj.weight", (H * hd, D)),
                wk=get(p + "attn.k_proj.weight", (Hkv * hd, D)),
                wv=get(p + "attn.v_proj.weight", (Hkv * hd, D)),
                wo=get(p + "attn.o_proj.weight", (D, H * hd)),
                q_norm_w=get(p + "attn.q_norm.weight", (H, hd)),
                q_norm_g=get(p + "attn.q_norm.gain", (H, 1)),
                k_norm_w=get(p + "attn.k_norm.weight", (Hkv, hd)),
                k_norm_g=get(p + "attn.k_norm.gain", (Hkv, 1)),
                smear=get(p + "attn.smear", (Hkv,), optional=True),
                ffn_norm=get(p + "ffn_norm.weight", (D,)),
                is_moe=i >= moe_first,
            )
            if lw.is_moe:
                lw.router_w = get(p + "ffn.router.w", (E, D))
                lw.router_bias = get(p + "ffn.router.bias", (E,))
                lw.e_gate = get(p + "ffn.gate")
                Fe = lw.e_gate.shape[1] if lw.e_gate.dim() == 3 else -1
                if lw.e_gate.shape != (E, Fe, D):
                    raise ValueError(f"{p}ffn.gate has shape {tuple(lw.e_gate.shape)}, expected [{E}, d_ff, {D}]")
                lw.e_up = get(p + "ffn.up", (E, Fe, D))
                lw.e_down = get(p + "ffn.down", (E, D, Fe))
                lw.s_gate = get(p + "ffn.shared_expert.gate.weight", optional=True)
                if lw.s_gate is not None:
                    Fs = lw.s_gate.shape[0]
                    if tuple(lw.s_gate.shape) != (Fs, D):
                        raise ValueError(f"{p}ffn.shared_expert.gate.weight has shape {tuple(lw.s_gate.shape)}")
                    lw.s_up = get(p + "ffn.shared_expert.up.weight", (Fs, D))
                    lw.s_down = get(p + "ffn.shared_expert.down.weight", (D, Fs))
            else:
                lw.gate = get(p + "ffn.gate.weight")
                Fd = lw.gate.shape[0]
                if tuple(lw.gate.shape) != (Fd, D):
                    raise ValueError(f"{p}ffn.gate.weight has shape {tuple(lw.gate.shape)}, expected [d_ff, {D}]")
                lw.up = get(p + "ffn.up.weight", (Fd, D))
                lw.down = get(p + "ffn.down.weight", (D, Fd))
            self.layers.append(lw)

        unused = sorted(set(sd) - self._used)
        if unused:
            notes.append(f"{len(unused)} tensors not used by the forward pass: {unused[:5]}")

        self.dims = Dims(vocab=V, d_model=D, n_layers=L, n_heads=H, n_kv_heads=Hkv, head_dim=hd,
                         n_experts=E, d_ff=F, moe_first_layer=moe_first, rope_dims=rope_dims,
                         rope_theta=float(settings["rope_theta"]), eps=float(settings["rms_eps"]),
                         mup_base_d=mup_base_d, top_k=top_k,
                         # spec §4: logits * sqrt(mup_base_d / d_model), also at inference
                         logit_scale=math.sqrt(mup_base_d / D), tied=head is None, notes=notes)
        self.max_seq_len = cfg.get("max_seq_len") if trust_cfg else None

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_dir(cls, path: str, overrides: Optional[dict] = None, **kw) -> "PhysicsModel":
        """Load `path` (a directory with model.safetensors [+ config.json], or a .safetensors file)."""
        weights = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
        if not os.path.isfile(weights):
            raise ValueError(f"{weights}: not found")
        return cls(read_safetensors(weights), read_config_json(path), overrides=overrides, **kw)

    # ------------------------------------------------------------------ shared helpers

    @property
    def vocab(self) -> int:
        return self.dims.vocab

    def _check_tokens(self, tokens) -> torch.Tensor:
        return check_tokens(tokens, self.dims.vocab)

    def _route(self, lw: LayerWeights, h: torch.Tensor):
        """Sigmoid router (spec §4, MoE block), fp32. h: [N, D].

        Returns (logits [N,E], sel [N,E], idx [N,k], weights [N,k])."""
        logits = h.float() @ lw.router_w.t()
        scores = torch.sigmoid(logits)
        sel = logits + lw.router_bias[None, :]      # bias added to LOGITS, for selection only
        idx = torch.topk(sel, self.dims.top_k, dim=-1).indices
        w = scores.gather(-1, idx)                  # weights from the UNBIASED sigmoid scores
        w = w / (w.sum(dim=-1, keepdim=True) + ROUTER_RENORM_EPS)
        return logits, sel, idx, w

    # ------------------------------------------------------------------ prefill path

    def forward(self, tokens, trace: Optional[list] = None) -> torch.Tensor:
        """Logits [T, V] for every position of `tokens` (one sequence, positions 0..T-1).

        If `trace` is a list, one dict per MoE layer is appended with the router's
        logits / selection scores / selected indices / weights (used by the fixture
        generator), the residual stream after attention and the layer's output (used by
        first_divergence.py)."""
        d = self.dims
        ids = self._check_tokens(tokens)
        T = ids.numel()
        H, Hkv, hd = d.n_heads, d.n_kv_heads, d.head_dim
        G = H // Hkv
        angles = rope_angles(torch.arange(T), d.rope_dims, d.rope_theta, self.fp32_rope_angles)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        x = self.embed[ids]                                          # no embedding scale

        with torch.no_grad():
            for li, lw in enumerate(self.layers):
                # ---- attention (spec §4)
                h = rms_norm(x, lw.attn_norm, d.eps)
                q = (h @ lw.wq.t()).view(T, H, hd)
                k = (h @ lw.wk.t()).view(T, Hkv, hd)
                v = (h @ lw.wv.t()).view(T, Hkv, hd)
                # QK-RMSNorm per head over head_dim, BEFORE RoPE, times weight[h,:] and gain[h,0]
                q = rms_norm(q, None, d.eps) * lw.q_norm_w[None] * lw.q_norm_g[None]
                k = rms_norm(k, None, d.eps) * lw.k_norm_w[None] * lw.k_norm_g[None]
                q = rope_interleaved_prefill(q, angles, d.rope_dims)
                k = rope_interleaved_prefill(k, angles, d.rope_dims)
                if lw.smear is not None:
                    v = v * lw.smear[None, :, None]                  # per-kv-head scalar on V
                # GQA: q head h = g*G + j uses kv head g  -> view the head axis as [Hkv, G]
                qg = q.permute(1, 0, 2).reshape(Hkv, G, T, hd)
                kg = k.permute(1, 0, 2)                              # [Hkv, T, hd]
                vg = v.permute(1, 0, 2)
                scores = torch.einsum("kgtd,ksd->kgts", qg, kg) / math.sqrt(hd)
                scores = scores.masked_fill(~causal, float("-inf"))
                p = torch.softmax(scores, dim=-1)
                o = torch.einsum("kgts,ksd->kgtd", p, vg)            # [Hkv, G, T, hd]
                o = o.reshape(H, T, hd).permute(1, 0, 2).reshape(T, H * hd)
                x = x + o @ lw.wo.t()

                # ---- FFN
                h2 = rms_norm(x, lw.ffn_norm, d.eps)
                if not lw.is_moe:
                    x = x + swiglu(h2, lw.gate, lw.up, lw.down)      # dense SwiGLU (layers < moe_first_layer)
                    continue
                logits, sel, idx, w = self._route(lw, h2)
                entry = {"layer": li, "logits": logits.clone(), "sel": sel.clone(), "idx": idx.clone(),
                         "weights": w.clone(), "attention": x.clone()}
                if trace is not None:
                    trace.append(entry)
                routed = torch.zeros_like(h2)
                for e in range(d.n_experts):                         # dropless: every assignment kept
                    tok, slot = (idx == e).nonzero(as_tuple=True)
                    if tok.numel() == 0:
                        continue
                    y = swiglu(h2[tok], lw.e_gate[e], lw.e_up[e], lw.e_down[e])
                    routed.index_add_(0, tok, y * w[tok, slot][:, None])
                if lw.s_gate is not None:                            # always-on, ungated shared expert
                    routed = routed + swiglu(h2, lw.s_gate, lw.s_up, lw.s_down)
                x = x + routed
                entry["hidden"] = x.clone()

            x = rms_norm(x, self.final_norm, d.eps)
            return (x @ self.head.t()) * d.logit_scale

    # ------------------------------------------------------------------ decode path
    # decode(tokens) (TokenByTokenDecode): logits [T, V] one token at a time via new_cache

    def new_cache(self, capacity: int) -> "KVCache":
        return KVCache(self, capacity)


class KVCache(KVCacheBase):
    """Token-by-token decoder with its own K/V cache (a separate code path from
    `PhysicsModel.forward`: vector math, per-head loop, per-token expert loop)."""

    def __init__(self, model: PhysicsModel, capacity: int):
        # cached K (after QK-norm and RoPE) and V (after smear), per layer [Hkv, capacity, hd]
        super().__init__(model, capacity, model.dims.n_kv_heads, model.dims.head_dim)

    def step(self, token: int) -> torch.Tensor:
        m, d = self.model, self.model.dims
        self.check_step(token, d.vocab)
        H, Hkv, hd = d.n_heads, d.n_kv_heads, d.head_dim
        G = H // Hkv
        pos = self.pos
        ang = rope_angles(torch.tensor([pos]), d.rope_dims, d.rope_theta, m.fp32_rope_angles)[0]
        x = m.embed[token].clone()                                   # [D]
        with torch.no_grad():
            for li, lw in enumerate(m.layers):
                h = rms_norm(x, lw.attn_norm, d.eps)
                q = torch.mv(lw.wq, h).view(H, hd)
                k = torch.mv(lw.wk, h).view(Hkv, hd)
                v = torch.mv(lw.wv, h).view(Hkv, hd)
                q = rms_norm(q, lw.q_norm_w, d.eps) * lw.q_norm_g
                k = rms_norm(k, lw.k_norm_w, d.eps) * lw.k_norm_g
                q = rope_interleaved_complex(q, ang, d.rope_dims)
                k = rope_interleaved_complex(k, ang, d.rope_dims)
                if lw.smear is not None:
                    v = v * lw.smear[:, None]
                self.k[li][:, pos] = k
                self.v[li][:, pos] = v
                heads = []
                for qh in range(H):
                    g = qh // G                                      # kv head serving q head qh
                    K = self.k[li][g, :pos + 1]                      # [pos+1, hd]
                    Vv = self.v[li][g, :pos + 1]
                    s = torch.mv(K, q[qh]) / math.sqrt(hd)
                    pr = torch.softmax(s, dim=0)
                    heads.append(torch.mv(Vv.t(), pr))
                x = x + torch.mv(lw.wo, torch.cat(heads))

                h2 = rms_norm(x, lw.ffn_norm, d.eps)
                if not lw.is_moe:
                    g_ = torch.nn.functional.silu(torch.mv(lw.gate, h2)) * torch.mv(lw.up, h2)
                    x = x + torch.mv(lw.down, g_)
                    continue
                _, _, idx, w = m._route(lw, h2[None, :])
                y = torch.zeros_like(h2)
                for slot in range(d.top_k):
                    e = int(idx[0, slot])
                    a = torch.nn.functional.silu(torch.mv(lw.e_gate[e], h2)) * torch.mv(lw.e_up[e], h2)
                    y = y + w[0, slot] * torch.mv(lw.e_down[e], a)
                if lw.s_gate is not None:
                    a = torch.nn.functional.silu(torch.mv(lw.s_gate, h2)) * torch.mv(lw.s_up, h2)
                    y = y + torch.mv(lw.s_down, a)
                x = x + y
            x = rms_norm(x, m.final_norm, d.eps)
            logits = torch.mv(m.head, x) * d.logit_scale
        self.pos += 1
        return logits


def load_model(path: str, overrides: Optional[dict] = None, **kw) -> PhysicsModel:
    return PhysicsModel.from_dir(path, overrides=overrides, **kw)
