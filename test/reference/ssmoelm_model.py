#!/usr/bin/python3
"""Independent float32 PyTorch reference + random-weight fixtures for SSMoELM
(brulee-1/SSMoELM-it and SSMoELM-Base): a 6-layer MoE whose weights ship PACKED
(1-bit and 4-bit codes with one fp16 scale per output row).

Written from shared/seeds/specs/SSMoELM.md (cited below as "spec §N"; the model card is
shared/seeds/cards/SSMoELM-it.txt). The publisher's inference.py was not found, so the
spec is low-confidence on the packing bits and the forward conventions; every such
detail below is a FIXED project decision (a named constant or a keyword option), the
same defaults as frontends/families/ssmoelm.json. No publisher code is used or needed.

Two separate code paths compute the same logits, so the reference checks itself:

  * `Model.forward(tokens)`  prefill: all T positions at once (matrix form, rotate_half
                             RoPE, causal-masked attention, per-expert token grouping),
  * `Model.decode(tokens)`   token by token (vector form) through a KV cache, RoPE as a
                             complex rotation, per-head loop, per-token expert loop with
                             a sort-based top-k.

Both compute on the weights obtained by READING THE WRITTEN FILE and unpacking its codes
with numpy bit arithmetic (`dequantize_tensors`), never on the writer's master weights.
Dequantized values are exact in float32: an fp16 scale (11 significant bits) times +-1
or an int in [-8, 7] (4 bits) needs at most 15 bits.

Math (spec §3, followed line by line; the [inferred] choices fixed as stated):

    x = E[ids]                                       E = dequant(embedding), no scale
    per layer i:
      h   = RMSNorm(x; input_layernorm, eps 1e-5)    x * rsqrt(mean(x^2) + eps) * w
      q   = h Wq^T -> [T, n_heads, hd];  k, v = h Wk^T, h Wv^T -> [T, n_kv, hd]
      q,k = half-split RoPE (rotate_half, NeoX; MLX nn.RoPE(traditional=False)) over
            the whole head, theta 10000:
              x' = x*cat(cos,cos) + cat(-x[hd/2:], x[:hd/2])*cat(sin,sin)
              inv_freq = 1/theta^(arange(0,hd,2)/hd) in float64, cast to float32
              angle    = float32(position) * inv_freq   (float32), cos/sin in float32
      GQA: kv head g serves q heads g*G .. g*G+G-1 (repeat_interleave), G = n_heads/n_kv
      x  += softmax(q k^T / sqrt(hd) + causal) v Wo^T
      h2  = RMSNorm(x; post_attention_layernorm, eps 1e-5)
      p   = softmax(h2 Wr^T) over ALL n_experts      Wr = router [E, d], no bias
      w, idx = top-2 of p;  w = w / sum(w)           (renormalised, no eps)
      x  += sum_k w_k * SwiGLU_idx_k(h2) + SwiGLU_shared(h2)
            SwiGLU(z) = down( silu(gate z) * (up z) ); the shared expert has the routed
            experts' width, is always on, weight 1, no gate scalar (spec §2: no tensor
            for one in the parameter count)
    x = RMSNorm(x; model.norm); logits = x E^T       tied 4-bit embedding, no bias

Tensor names (the card gives none, spec §2; these are our chosen defaults):

    model.embed_tokens.weight                              [V, d]          4-bit
    model.layers.{i}.input_layernorm.weight                [d]             F16
    model.layers.{i}.self_attn.q_proj.weight               [H*hd, d]       4-bit
    model.layers.{i}.self_attn.k_proj.weight               [Hkv*hd, d]     4-bit
    model.layers.{i}.self_attn.v_proj.weight               [Hkv*hd, d]     4-bit first/last layer, else 1-bit
    model.layers.{i}.self_attn.o_proj.weight               [d, H*hd]       4-bit first/last layer, else 1-bit
    model.layers.{i}.post_attention_layernorm.weight       [d]             F16
    model.layers.{i}.mlp.router.weight                     [E, d]          F16
    model.layers.{i}.mlp.experts.{e}.{gate,up}_proj.weight [d_ff, d]       1-bit
    model.layers.{i}.mlp.experts.{e}.down_proj.weight      [d, d_ff]       1-bit
    model.layers.{i}.mlp.shared_expert.{gate,up}_proj.weight [d_ff, d]     4-bit
    model.layers.{i}.mlp.shared_expert.down_proj.weight    [d, d_ff]       4-bit
    model.norm.weight                                      [d]             F16

(the card's table, spec §1: routed experts 1-bit, shared expert / Q / K / embedding
4-bit, V and O 4-bit in layers 0 and 5 of 6 and 1-bit in layers 1-4; router and norms
"bf16", stored F16 since the file has no BF16 tensors.)

Packed format (spec §1 key scheme, §4 bit level). A packed logical tensor K [rows, cols]
is stored as (K itself is absent):

    K__scale  F16 [rows]       one scale per output row
    K__bin    U8  [ceil(rows*cols/8)]   1-bit: sign bits of the row-major FLATTENED
              [rows, cols] array (bit 1 = +1, 0 = -1), np.packbits; bit_order
              "msb_first" (np.packbits' default "big": element 0 in bit 7 of byte 0) or
              "lsb_first". W[r, c] = scale[r] * (+1 if bit(r*cols + c) else -1).
              Writer: scale = mean(|W_row|) of the master weight, bit = W >= 0.
    K__int4   U8  [ceil(rows*cols/2)]   4-bit: code i = r*cols + c in byte i // 2;
              nibble_order "low_first" (even i in the low nibble) or "high_first";
              int4_code "twos_complement" (nibble = q & 0xF, q in [-8, 7]) or "offset8"
              (nibble = q + 8). W[r, c] = scale[r] * q.
              Writer: scale = max|W_row| / 7, q = clip(round(W / scale), -7, 7).
    K__shape  I32 [2] = [rows, cols]
    K__cols   I32 [1] = [cols]
A padding bit / nibble (when rows*cols is not a multiple of 8 / 2) is 0 / the code of
0 and is never read.

Fixture files: model.safetensors (__metadata__ {"format": "pt", "bits_config": json}),
config.json (MLX-style sizes + "packing": {bit_order, nibble_order, int4_code}, which
Model.from_dir reads unless told otherwise) and tokenizer_config.json.

    /usr/bin/python3 test/reference/ssmoelm_model.py fixture --out DIR [--preset tiny|tiny2|full]
        [--seed N] [--prefix P] [--bit-order msb_first|lsb_first]
        [--nibble-order low_first|high_first] [--int4-code twos_complement|offset8]
        [--check-tokens "1,2,3;4,5"]
    /usr/bin/python3 test/reference/ssmoelm_model.py logits --model DIR --tokens 1,2,3 --out f.f32
        [--decode] [--bit-order ...] [--nibble-order ...] [--int4-code ...]
    /usr/bin/python3 test/reference/ssmoelm_model.py counts [--preset full]
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from reference_common import (KVCacheBase, TokenByTokenDecode, check_tokens,  # noqa: E402
                              read_config_json, tensor_rng, topk_margin, write_json,
                              write_logits)
from safetensors_io import LazyTensor, read_safetensors, write_safetensors  # noqa: E402

# --------------------------------------------------------------------------- constants

ROPE_THETA = 10000.0   # spec §3: MLX nn.RoPE default base (assumed)
NORM_EPS = 1e-5        # spec §3: MLX nn.RMSNorm default eps (assumed)
TOP_K = 2              # card: top-2 routing
MAX_SEQ_LEN = 2048     # card: context 2,048
MARGIN_MIN = 1e-4      # smallest top-k probability margin accepted for a fixture seed
MAX_TRIES = 50

FULL_PARAMS = 47_036_160          # card "47.04M", spec §2 [arith]
FULL_ACTIVE_PARAMS = 25_802_496   # card "25.80M", spec §2 [arith]

# Packing options (spec §4 [inferred]); the first of each is the default.
BIT_ORDERS = {"msb_first": "big", "lsb_first": "little"}        # -> np.packbits bitorder
NIBBLE_ORDERS = ("low_first", "high_first")
INT4_CODES = ("twos_complement", "offset8")
DEFAULT_PACKING = {"bit_order": "msb_first", "nibble_order": "low_first",
                   "int4_code": "twos_complement"}

# Suffixes of the packed key scheme (spec §1).
SUFFIXES = ("__scale", "__bin", "__int4", "__shape", "__cols")

SIZE_KEYS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
             "n_experts", "top_k", "d_ff")

# Size presets (config.json key names). In both tiny presets every packed tensor's
# rows*cols is a multiple of 8 (whole bytes); tiny2's d_ff 36 makes expert/shared
# down_proj [48, 36] a tensor whose ROWS do not start on byte boundaries (row 1 of the
# 1-bit codes starts at bit 4 of byte 4; cols 36 is not a multiple of 8, 48*36 is).
PRESETS = {
    # 3 layers so that the middle layer has 1-bit V/O; GQA group 2; 6 experts; d_ff 40
    "tiny": dict(vocab_size=96, d_model=64, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=16,
                 n_experts=6, top_k=2, d_ff=40),
    # different awkward sizes: vocab 77, hd 12 (6 frequencies), one kv head (G = 4),
    # 5 experts, d_ff 36 (cols not a multiple of 8)
    "tiny2": dict(vocab_size=77, d_model=48, n_layers=3, n_heads=4, n_kv_heads=1, head_dim=12,
                  n_experts=5, top_k=2, d_ff=36),
    # the smallest that keeps every kind of packed tensor (a middle layer with 1-bit V/O,
    # GQA, a routed expert besides the chosen one): test/fuzz's packed seed, 3.6 KB of
    # weights, so that the fuzzer's mutations spend their time in the reader
    "fuzz": dict(vocab_size=16, d_model=16, n_layers=3, n_heads=2, n_kv_heads=1, head_dim=8,
                 n_experts=2, top_k=1, d_ff=8),
    # the published model (card; spec §2 table)
    "full": dict(vocab_size=8192, d_model=768, n_layers=6, n_heads=12, n_kv_heads=3, head_dim=64,
                 n_experts=8, top_k=2, d_ff=256),
}


def preset_config(preset: Union[str, dict] = "tiny", **sizes) -> dict:
    """The full config dict (sizes + rope_theta, norm_eps, max_seq_len) of a preset name
    or a size dict, with keyword overrides, validated."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        c = dict(PRESETS[preset])
    else:
        c = dict(preset)
    c.setdefault("rope_theta", ROPE_THETA)
    c.setdefault("norm_eps", NORM_EPS)
    c.setdefault("max_seq_len", MAX_SEQ_LEN)
    c.update(sizes)
    for k in SIZE_KEYS + ("max_seq_len",):
        if not isinstance(c.get(k), int) or c[k] < 1:
            raise ValueError(f"size {k}={c.get(k)!r} must be a positive integer")
    if c["n_heads"] % c["n_kv_heads"]:
        raise ValueError(f"n_heads {c['n_heads']} is not a multiple of n_kv_heads {c['n_kv_heads']}")
    if c["head_dim"] % 2:
        raise ValueError(f"head_dim {c['head_dim']} must be even (half-split RoPE)")
    if c["top_k"] > c["n_experts"]:
        raise ValueError(f"top_k {c['top_k']} > n_experts {c['n_experts']}")
    return c


def resolve_packing(bit_order: Optional[str] = None, nibble_order: Optional[str] = None,
                    int4_code: Optional[str] = None, base: Optional[dict] = None) -> dict:
    """Packing options: explicit arguments over `base` (e.g. config.json "packing") over
    the defaults; each checked."""
    p = dict(DEFAULT_PACKING)
    p.update({k: v for k, v in (base or {}).items() if k in DEFAULT_PACKING})
    for k, v in (("bit_order", bit_order), ("nibble_order", nibble_order), ("int4_code", int4_code)):
        if v is not None:
            p[k] = v
    if p["bit_order"] not in BIT_ORDERS:
        raise ValueError(f"bit_order {p['bit_order']!r}: expected {' or '.join(BIT_ORDERS)}")
    if p["nibble_order"] not in NIBBLE_ORDERS:
        raise ValueError(f"nibble_order {p['nibble_order']!r}: expected {' or '.join(NIBBLE_ORDERS)}")
    if p["int4_code"] not in INT4_CODES:
        raise ValueError(f"int4_code {p['int4_code']!r}: expected {' or '.join(INT4_CODES)}")
    return p


# --------------------------------------------------------------------------- names and shapes

def vo_bits(layer: int, n_layers: int) -> int:
    """Card table (spec §1): V and O are 4-bit in the boundary layers (0 and 5 of 6),
    1-bit in the inner ones. Generalised as first/last layer."""
    return 4 if layer in (0, n_layers - 1) else 1


def tensor_specs(c: dict) -> "collections.OrderedDict[str, Tuple[tuple, str]]":
    """Logical tensor name -> (shape, storage) with storage "int4", "bin" (1-bit) or
    "f16", in model order (module docstring table)."""
    V, d, hd, F = c["vocab_size"], c["d_model"], c["head_dim"], c["d_ff"]
    q_rows, kv_rows = c["n_heads"] * hd, c["n_kv_heads"] * hd
    L = c["n_layers"]
    out = collections.OrderedDict()
    out["model.embed_tokens.weight"] = ((V, d), "int4")
    for i in range(L):
        p = f"model.layers.{i}."
        vo = "int4" if vo_bits(i, L) == 4 else "bin"
        out[p + "input_layernorm.weight"] = ((d,), "f16")
        out[p + "self_attn.q_proj.weight"] = ((q_rows, d), "int4")
        out[p + "self_attn.k_proj.weight"] = ((kv_rows, d), "int4")
        out[p + "self_attn.v_proj.weight"] = ((kv_rows, d), vo)
        out[p + "self_attn.o_proj.weight"] = ((d, q_rows), vo)
        out[p + "post_attention_layernorm.weight"] = ((d,), "f16")
        out[p + "mlp.router.weight"] = ((c["n_experts"], d), "f16")
        for e in range(c["n_experts"]):
            q = p + f"mlp.experts.{e}."
            out[q + "gate_proj.weight"] = ((F, d), "bin")
            out[q + "up_proj.weight"] = ((F, d), "bin")
            out[q + "down_proj.weight"] = ((d, F), "bin")
        q = p + "mlp.shared_expert."
        out[q + "gate_proj.weight"] = ((F, d), "int4")
        out[q + "up_proj.weight"] = ((F, d), "int4")
        out[q + "down_proj.weight"] = ((d, F), "int4")
    out["model.norm.weight"] = ((d,), "f16")
    return out


def param_counts(preset_or_model) -> Tuple[int, int]:
    """(total, active) logical (unpacked) weights: the tied embedding once, norms,
    router, q/k/v/o, the shared expert, and the routed experts (active: top_k of them
    per layer). Scales and shape metadata are not parameters.
    Full size: (47,036,160, 25,802,496), the card's 47.04M / 25.80M (spec §2)."""
    c = preset_or_model.cfg if isinstance(preset_or_model, Model) else preset_config(preset_or_model)
    V, d, hd, F, E = c["vocab_size"], c["d_model"], c["head_dim"], c["d_ff"], c["n_experts"]
    expert = 3 * F * d
    dense_layer = (2 * d                                  # two RMSNorms
                   + 2 * c["n_heads"] * hd * d            # q, o
                   + 2 * c["n_kv_heads"] * hd * d         # k, v
                   + E * d                                # router
                   + expert)                              # shared expert
    common = V * d + d                                    # tied embedding, final norm
    total = common + c["n_layers"] * (dense_layer + E * expert)
    active = common + c["n_layers"] * (dense_layer + c["top_k"] * expert)
    return total, active


# --------------------------------------------------------------------------- packing (writer)

def quantize_sign1(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """BitNet-style binarisation (spec §4): per-row scale mean(|W_row|) stored as fp16,
    sign bit = W >= 0. Returns (scale f16 [rows], bits uint8 [rows*cols] flat)."""
    scale = np.abs(w).mean(axis=1).astype(np.float16)
    return scale, (w >= 0).astype(np.uint8).reshape(-1)


def quantize_int4(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric absmax 4-bit (spec §4): scale = max|W_row| / 7 stored as fp16,
    q = clip(round(W / scale), -7, 7) with the fp16-rounded scale (q = 0 for an all-zero
    row). Returns (scale f16 [rows], q int8 [rows*cols] flat)."""
    scale = (np.abs(w).max(axis=1) / np.float32(7)).astype(np.float16)
    s32 = scale.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s32 > 0, np.rint(w / np.where(s32 > 0, s32, 1)), 0)
    return scale, np.clip(q, -7, 7).astype(np.int8).reshape(-1)


def pack_sign1(bits: np.ndarray, bit_order: str = "msb_first") -> np.ndarray:
    """Flat 0/1 array -> ceil(n/8) bytes, np.packbits (zero padding bits)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8).reshape(-1), bitorder=BIT_ORDERS[bit_order])


def int4_codes(q: np.ndarray, int4_code: str = "twos_complement") -> np.ndarray:
    """Signed values in [-8, 7] -> nibble codes 0..15."""
    q = np.asarray(q, dtype=np.int16)
    if q.size and (q.min() < -8 or q.max() > 7):
        raise ValueError("int4 values must lie in [-8, 7]")
    return ((q & 0xF) if int4_code == "twos_complement" else (q + 8)).astype(np.uint8)


def pack_int4(q: np.ndarray, nibble_order: str = "low_first",
              int4_code: str = "twos_complement") -> np.ndarray:
    """Flat int array in [-8, 7] -> ceil(n/2) bytes, two codes per byte; an odd count
    is padded with the code of 0."""
    c = int4_codes(np.asarray(q).reshape(-1), int4_code)
    if c.size % 2:
        c = np.concatenate([c, int4_codes(np.zeros(1), int4_code)])
    first, second = c[0::2], c[1::2]
    if nibble_order == "low_first":
        return (first | (second << 4)).astype(np.uint8)
    return ((first << 4) | second).astype(np.uint8)


def packed_entries(name: str, w: np.ndarray, storage: str, packing: dict) -> Dict[str, np.ndarray]:
    """The file entries K__scale, K__bin|K__int4, K__shape, K__cols of master weight w."""
    rows, cols = w.shape
    if storage == "bin":
        scale, bits = quantize_sign1(w)
        codes = ("__bin", pack_sign1(bits, packing["bit_order"]))
    else:
        scale, q = quantize_int4(w)
        codes = ("__int4", pack_int4(q, packing["nibble_order"], packing["int4_code"]))
    return {name + "__scale": scale, name + codes[0]: codes[1],
            name + "__shape": np.array([rows, cols], dtype=np.int32),
            name + "__cols": np.array([cols], dtype=np.int32)}


# --------------------------------------------------------------------------- unpacking (reader)
# Written with explicit shifts and masks, not np.unpackbits, so the reader states the
# format independently of the writer's np.packbits.

def unpack_sign1(packed: np.ndarray, count: int, bit_order: str = "msb_first") -> np.ndarray:
    """ceil(count/8) bytes -> `count` values +1.0 / -1.0 (float32): element i is bit
    (7 - i%8) [msb_first] or bit (i%8) [lsb_first] of byte i//8; 1 -> +1, 0 -> -1."""
    i = np.arange(count, dtype=np.int64)
    shift = (7 - (i & 7)) if bit_order == "msb_first" else (i & 7)
    bit = (packed.astype(np.int64)[i >> 3] >> shift) & 1
    return np.where(bit == 1, np.float32(1), np.float32(-1)).astype(np.float32)


def unpack_int4(packed: np.ndarray, count: int, nibble_order: str = "low_first",
                int4_code: str = "twos_complement") -> np.ndarray:
    """ceil(count/2) bytes -> `count` signed values (int8): element i is the low
    [low_first, i even] or high nibble of byte i//2; twos_complement: nibble n -> n - 16
    if n >= 8 else n; offset8: n - 8."""
    i = np.arange(count, dtype=np.int64)
    b = packed.astype(np.int64)[i >> 1]
    low = (i & 1) == 0 if nibble_order == "low_first" else (i & 1) == 1
    n = np.where(low, b & 0xF, b >> 4)
    q = np.where(n >= 8, n - 16, n) if int4_code == "twos_complement" else n - 8
    return q.astype(np.int8)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def dequantize_tensors(tensors: Dict[str, torch.Tensor], packing: Optional[dict] = None,
                       prefix: str = "") -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Every logical tensor of a file's tensor dict, as float32 torch tensors.

    Keys (after removing `prefix`) ending in a packed suffix are grouped by base name K;
    each group needs K__scale (float [rows]), K__shape (I32 [2]), exactly one of K__bin /
    K__int4 (U8 1-D of the exact byte count) and optionally K__cols (I32 [1] = cols).
    W[r, c] = float32(scale[r]) * code(r*cols + c). Other tensors are returned as their
    float32 values (F16 norms and router: the f16 numbers). Returns (weights, storage)
    with storage[name] in "bin", "int4", "f16", "f32" (the plain tensor's dtype)."""
    pk = resolve_packing(base=packing)
    groups: Dict[str, Dict[str, torch.Tensor]] = collections.defaultdict(dict)
    plain: Dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        if not key.startswith(prefix):
            raise ValueError(f"tensor {key!r} lacks the key prefix {prefix!r}")
        k = key[len(prefix):]
        for s in SUFFIXES:
            if k.endswith(s):
                groups[k[:-len(s)]][s] = t
                break
        else:
            plain[k] = t
    weights: Dict[str, torch.Tensor] = {}
    storage: Dict[str, str] = {}
    for name, t in plain.items():
        if not t.is_floating_point():
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} is neither float nor a packed entry")
        if name in groups:
            raise ValueError(f"{name!r} is stored both plain and packed")
        weights[name] = t.float()
        storage[name] = {torch.float16: "f16", torch.bfloat16: "bf16"}.get(t.dtype, "f32")
    for name, g in groups.items():
        where = f"packed tensor {name!r}"
        for s in ("__scale", "__shape"):
            if s not in g:
                raise ValueError(f"{where}: no {name}{s}")
        kinds = [s for s in ("__bin", "__int4") if s in g]
        if len(kinds) != 1:
            raise ValueError(f"{where}: needs exactly one of __bin / __int4, has {kinds or 'none'}")
        shp = g["__shape"]
        if shp.dtype != torch.int32 or tuple(shp.shape) != (2,):
            raise ValueError(f"{where}: __shape must be I32 [2], is {shp.dtype} {list(shp.shape)}")
        rows, cols = (int(v) for v in shp)
        if rows < 1 or cols < 1:
            raise ValueError(f"{where}: __shape {[rows, cols]} is not positive")
        if "__cols" in g:
            cl = g["__cols"]
            if cl.dtype != torch.int32 or cl.numel() != 1 or int(cl.reshape(-1)[0]) != cols:
                raise ValueError(f"{where}: __cols {cl.tolist()} does not say [{cols}] (I32)")
        scale = g["__scale"]
        if not scale.is_floating_point() or tuple(scale.shape) != (rows,):
            raise ValueError(f"{where}: __scale must be a float [{rows}], is {scale.dtype} {list(scale.shape)}")
        codes = g[kinds[0]]
        n = rows * cols
        nbytes = (n + 7) // 8 if kinds[0] == "__bin" else (n + 1) // 2
        if codes.dtype != torch.uint8 or tuple(codes.shape) != (nbytes,):
            raise ValueError(f"{where}: {kinds[0]} must be U8 [{nbytes}], is {codes.dtype} {list(codes.shape)}")
        if kinds[0] == "__bin":
            vals = unpack_sign1(_np(codes), n, pk["bit_order"])
        else:
            vals = unpack_int4(_np(codes), n, pk["nibble_order"], pk["int4_code"]).astype(np.float32)
        s32 = _np(scale.float()).astype(np.float32)          # fp16 scale -> float32 first
        w = vals.reshape(rows, cols) * s32[:, None]
        weights[name] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        storage[name] = "bin" if kinds[0] == "__bin" else "int4"
    return weights, storage


def detect_prefix(keys) -> str:
    """The key prefix of a file: whatever precedes the embedding's scale entry
    ("" for our default names; e.g. "_orig_mod." for a torch.compile'd save)."""
    tail = "model.embed_tokens.weight__scale"
    hits = [k[:-len(tail)] for k in keys if k.endswith(tail)]
    if len(hits) != 1:
        raise ValueError(f"expected exactly one '*{tail}' tensor, found {len(hits)}")
    return hits[0]


# --------------------------------------------------------------------------- math pieces

def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """spec §3: x * rsqrt(mean(x^2, -1) + eps) * w, in float32."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w


def inv_freq(head_dim: int, theta: float = ROPE_THETA) -> torch.Tensor:
    """1 / theta^(arange(0, hd, 2) / hd), formed in float64 and cast to float32."""
    return (1.0 / (float(theta) ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))).float()


def rope_angles(positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """angle[t, j] = float32(pos[t]) * inv_freq[j], the product in float32 ([T, hd/2])."""
    return positions.to(torch.float32)[:, None] * freqs[None, :]


def rope_half_split(x: torch.Tensor, ang: torch.Tensor) -> torch.Tensor:
    """Prefill form: x [T, H, hd], ang [T, hd/2]. x' = x * cat(cos, cos) +
    rotate_half(x) * cat(sin, sin), rotate_half(x) = cat(-x[hd/2:], x[:hd/2])."""
    half = x.shape[-1] // 2
    c = torch.cat([ang.cos(), ang.cos()], dim=-1)[:, None, :]
    s = torch.cat([ang.sin(), ang.sin()], dim=-1)[:, None, :]
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * c + rot * s


def rope_half_split_complex(x: torch.Tensor, ang: torch.Tensor) -> torch.Tensor:
    """Decode form: the pair (j, j + hd/2) as x_j + i x_{j+hd/2} times e^{i ang_j}.
    x [H, hd], ang [hd/2]."""
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half].contiguous(), x[..., half:].contiguous())
    r = z * torch.complex(ang.cos(), ang.sin())
    return torch.cat([r.real, r.imag], dim=-1)


def fake_int8(x: torch.Tensor, block: Optional[int]) -> torch.Tensor:
    """x [..., K] as a projection with int8 inputs (moec --activations=int8) sees it:
    per block of `block` features, q = round_half_even(x * (127 / max|x|)) in f32, and
    x = q * (max|x| / 127). None, or K not whole blocks: x itself (f32 inputs, as moec
    keeps for such a projection)."""
    if block is None or x.shape[-1] % block:
        return x
    shape = x.shape
    xb = x.reshape(*shape[:-1], shape[-1] // block, block)
    amax = xb.abs().amax(dim=-1, keepdim=True)
    inverse = torch.where(amax > 0, torch.tensor(127.0) / amax, torch.zeros_like(amax))
    q = torch.clamp(torch.round(xb * inverse), -127.0, 127.0)
    return (q * (amax / 127.0)).reshape(shape)


def swiglu(z: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor,
           int8: Optional[int] = None) -> torch.Tensor:
    """down(silu(gate z) * up z), nn.Linear [out, in] layouts, z [N, d]; with `int8`,
    each projection's input through fake_int8 (the shared expert: three moe.linear)."""
    z = fake_int8(z, int8)
    hidden = torch.nn.functional.silu(z @ gate.T) * (z @ up.T)
    return fake_int8(hidden, int8) @ down.T


# --------------------------------------------------------------------------- model

class LayerW:
    __slots__ = ("ln1", "wq", "wk", "wv", "wo", "ln2", "router", "gate", "up", "down",
                 "s_gate", "s_up", "s_down")


class Model(TokenByTokenDecode):
    """SSMoELM reference from a safetensors tensor dict (packed entries included).

    `Model(tensors, config, bit_order=..., nibble_order=..., int4_code=...)` or
    `Model.from_dir(dir)`. Sizes come from the tensor shapes; n_heads (not visible in
    shapes) and the settings from config.json (defaults: 12 heads, theta 10000, eps
    1e-5, top-2, 2048 positions); config sizes that disagree with the shapes are an
    error. Packing options: arguments, else config["packing"], else the defaults."""

    def __init__(self, tensors: Dict[str, torch.Tensor], config: Optional[dict] = None, *,
                 bit_order: Optional[str] = None, nibble_order: Optional[str] = None,
                 int4_code: Optional[str] = None, prefix: Optional[str] = None,
                 int8_activations: Optional[int] = None):
        cfg_in = dict(config or {})
        # Every projection of packed weights (all but the router) with int8 inputs,
        # per block of this many features, as `moec --activations=int8` computes it.
        self.int8 = int8_activations
        self.packing = resolve_packing(bit_order, nibble_order, int4_code, cfg_in.get("packing"))
        self.prefix = detect_prefix(tensors) if prefix is None else prefix
        w, self.storage = dequantize_tensors(tensors, self.packing, self.prefix)
        used = set()

        def get(name, shape=None):
            if name not in w:
                raise ValueError(f"checkpoint is missing tensor {name!r}")
            t = w[name]
            if shape is not None and tuple(t.shape) != tuple(shape):
                raise ValueError(f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
            used.add(name)
            return t

        emb = get("model.embed_tokens.weight")
        if emb.dim() != 2:
            raise ValueError(f"embedding must be 2-D, got {tuple(emb.shape)}")
        V, d = emb.shape
        L = 0
        while f"model.layers.{L}.input_layernorm.weight" in w:
            L += 1
        if L == 0:
            raise ValueError("no model.layers.0.input_layernorm.weight")
        n_heads = int(cfg_in.get("n_heads", 12))
        q_rows = get("model.layers.0.self_attn.q_proj.weight").shape[0]
        hd = int(cfg_in.get("head_dim") or q_rows // n_heads)
        if q_rows != n_heads * hd:
            raise ValueError(f"q_proj has {q_rows} rows, not n_heads {n_heads} x head_dim {hd}")
        kv_rows = get("model.layers.0.self_attn.k_proj.weight").shape[0]
        if kv_rows % hd or n_heads % (kv_rows // hd):
            raise ValueError(f"k_proj has {kv_rows} rows: not n_kv_heads x head_dim {hd} dividing {n_heads} heads")
        E = get("model.layers.0.mlp.router.weight").shape[0]
        F = get("model.layers.0.mlp.experts.0.down_proj.weight").shape[1]
        shapes = dict(vocab_size=V, d_model=d, n_layers=L, n_heads=n_heads, n_kv_heads=kv_rows // hd,
                      head_dim=hd, n_experts=E, d_ff=F)
        for k, v in shapes.items():
            if k in cfg_in and int(cfg_in[k]) != v:
                raise ValueError(f"config.json says {k}={cfg_in[k]} but the tensors say {v}")
        c = dict(shapes, top_k=int(cfg_in.get("top_k", TOP_K)),
                 rope_theta=float(cfg_in.get("rope_theta", ROPE_THETA)),
                 norm_eps=float(cfg_in.get("norm_eps", NORM_EPS)),
                 max_seq_len=int(cfg_in.get("max_seq_len", MAX_SEQ_LEN)))
        if not 1 <= c["top_k"] <= E:
            raise ValueError(f"top_k {c['top_k']} not in 1..{E}")
        self.cfg = c
        self.vocab = V
        self.emb = emb
        self.inv_freq = inv_freq(hd, c["rope_theta"])
        Hq, Hkv = n_heads * hd, kv_rows
        self.layers: List[LayerW] = []
        for i in range(L):
            p = f"model.layers.{i}."
            lw = LayerW()
            lw.ln1 = get(p + "input_layernorm.weight", (d,))
            lw.wq = get(p + "self_attn.q_proj.weight", (Hq, d))
            lw.wk = get(p + "self_attn.k_proj.weight", (Hkv, d))
            lw.wv = get(p + "self_attn.v_proj.weight", (Hkv, d))
            lw.wo = get(p + "self_attn.o_proj.weight", (d, Hq))
            lw.ln2 = get(p + "post_attention_layernorm.weight", (d,))
            lw.router = get(p + "mlp.router.weight", (E, d))
            x = p + "mlp.experts.{}."
            lw.gate = torch.stack([get(x.format(e) + "gate_proj.weight", (F, d)) for e in range(E)])
            lw.up = torch.stack([get(x.format(e) + "up_proj.weight", (F, d)) for e in range(E)])
            lw.down = torch.stack([get(x.format(e) + "down_proj.weight", (d, F)) for e in range(E)])
            s = p + "mlp.shared_expert."
            lw.s_gate = get(s + "gate_proj.weight", (F, d))
            lw.s_up = get(s + "up_proj.weight", (F, d))
            lw.s_down = get(s + "down_proj.weight", (d, F))
            self.layers.append(lw)
        self.final_norm = get("model.norm.weight", (d,))
        extra = sorted(set(w) - used)
        if extra:
            raise ValueError(f"unexpected tensors in checkpoint: {extra[:5]}{' ...' if len(extra) > 5 else ''}")

    @classmethod
    def from_dir(cls, path: str, *, bit_order: Optional[str] = None, nibble_order: Optional[str] = None,
                 int4_code: Optional[str] = None, prefix: Optional[str] = None,
                 int8_activations: Optional[int] = None) -> "Model":
        """Read DIR/model.safetensors (or a .safetensors file) and the config.json beside it."""
        f = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
        return cls(read_safetensors(f), read_config_json(path), bit_order=bit_order,
                   nibble_order=nibble_order, int4_code=int4_code, prefix=prefix,
                   int8_activations=int8_activations)

    def expert_int8(self) -> Optional[int]:
        """The routed experts are one moe.expert_dispatch: int8 inputs for all three
        projections, or for none when d_model or d_ff is not whole blocks."""
        if self.int8 is None or self.cfg["d_model"] % self.int8 or self.cfg["d_ff"] % self.int8:
            return None
        return self.int8

    def mm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x W^T for a packed weight W: with int8 inputs when the model has them."""
        return fake_int8(x, self.int8) @ w.T

    def _check_tokens(self, tokens) -> torch.Tensor:
        return check_tokens(tokens, self.vocab, self.cfg["max_seq_len"])

    # ---------------------------------------------------------------- prefill
    def forward(self, tokens: Sequence[int], trace: Optional[list] = None) -> torch.Tensor:
        """Logits [T, vocab] for all positions at once. With `trace` a list, one dict per
        layer is appended: layer, hidden [T,d] after the layer, router_logits [T,E],
        probs [T,E], experts [T,k], weights [T,k] (renormalised)."""
        c = self.cfg
        ids = self._check_tokens(tokens)
        T = ids.numel()
        H, Hkv, hd, k_top = c["n_heads"], c["n_kv_heads"], c["head_dim"], c["top_k"]
        G = H // Hkv
        ang = rope_angles(torch.arange(T), self.inv_freq)
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.emb[ids]
        with torch.no_grad():
            for li, lw in enumerate(self.layers):
                h = rms_norm(x, lw.ln1, c["norm_eps"])
                q = rope_half_split(self.mm(h, lw.wq).view(T, H, hd), ang)
                k = rope_half_split(self.mm(h, lw.wk).view(T, Hkv, hd), ang)
                v = self.mm(h, lw.wv).view(T, Hkv, hd)
                k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)   # [T, H, hd]
                s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
                y = torch.einsum("hts,shd->thd", torch.softmax(s, dim=-1), v).reshape(T, H * hd)
                x = x + self.mm(y, lw.wo)
                h2 = rms_norm(x, lw.ln2, c["norm_eps"])
                rlogits = h2 @ lw.router.T
                probs = torch.softmax(rlogits, dim=-1)
                top, idx = torch.topk(probs, k_top, dim=-1)
                wts = top / top.sum(dim=-1, keepdim=True)
                out = swiglu(h2, lw.s_gate, lw.s_up, lw.s_down, self.int8)  # shared expert
                for e in range(c["n_experts"]):                          # dropless
                    rows, slots = (idx == e).nonzero(as_tuple=True)
                    if rows.numel():
                        ye = swiglu(h2[rows], lw.gate[e], lw.up[e], lw.down[e],
                                    self.expert_int8())
                        out.index_add_(0, rows, ye * wts[rows, slots][:, None])
                x = x + out
                if trace is not None:
                    trace.append({"layer": li, "hidden": x.clone(), "router_logits": rlogits.clone(),
                                  "probs": probs.clone(), "experts": idx.clone(), "weights": wts.clone()})
            return self.mm(rms_norm(x, self.final_norm, c["norm_eps"]), self.emb)

    # ---------------------------------------------------------------- decode
    # decode(tokens) (TokenByTokenDecode): logits [T, V] one token at a time via new_cache

    def new_cache(self, capacity: int) -> "KVCache":
        return KVCache(self, capacity)


class KVCache(KVCacheBase):
    """Token-by-token decoder (vector math, per-head loop, complex RoPE, per-token expert
    loop with a stable sort as top-k): a code path separate from `Model.forward`.
    Caches post-RoPE K and V per layer, [n_kv_heads, capacity, head_dim]."""

    def __init__(self, model: Model, capacity: int):
        c = model.cfg
        super().__init__(model, capacity, c["n_kv_heads"], c["head_dim"], c["max_seq_len"])

    def step(self, token: int) -> torch.Tensor:
        m, c = self.model, self.model.cfg
        self.check_step(token, m.vocab)
        H, Hkv, hd, k_top, pos = c["n_heads"], c["n_kv_heads"], c["head_dim"], c["top_k"], self.pos
        G = H // Hkv
        ang = rope_angles(torch.tensor([pos]), m.inv_freq)[0]
        x = m.emb[token].clone()

        def mv(w, v):   # a packed projection of one vector, int8 inputs if the model has them
            return torch.mv(w, fake_int8(v, m.int8))

        with torch.no_grad():
            for li, lw in enumerate(m.layers):
                h = rms_norm(x, lw.ln1, c["norm_eps"])
                q = rope_half_split_complex(mv(lw.wq, h).view(H, hd), ang)
                self.k[li][:, pos] = rope_half_split_complex(mv(lw.wk, h).view(Hkv, hd), ang)
                self.v[li][:, pos] = mv(lw.wv, h).view(Hkv, hd)
                heads = []
                for qh in range(H):
                    g = qh // G                                   # kv head serving q head qh
                    pr = torch.softmax(torch.mv(self.k[li][g, :pos + 1], q[qh]) / math.sqrt(hd), dim=0)
                    heads.append(torch.mv(self.v[li][g, :pos + 1].T, pr))
                x = x + mv(lw.wo, torch.cat(heads))
                h2 = rms_norm(x, lw.ln2, c["norm_eps"])
                p = torch.softmax(torch.mv(lw.router, h2), dim=0)
                order = torch.sort(p, descending=True, stable=True).indices[:k_top]
                wsel = p[order] / p[order].sum()
                a = torch.nn.functional.silu(mv(lw.s_gate, h2)) * mv(lw.s_up, h2)
                y = mv(lw.s_down, a)                              # shared expert, always on
                experts = m.expert_int8()
                for slot in range(k_top):
                    e = int(order[slot])
                    z = fake_int8(h2, experts)
                    a = torch.nn.functional.silu(torch.mv(lw.gate[e], z)) * torch.mv(lw.up[e], z)
                    y = y + wsel[slot] * torch.mv(lw.down[e], fake_int8(a, experts))
                x = x + y
            logits = mv(m.emb, rms_norm(x, m.final_norm, c["norm_eps"]))
        self.pos += 1
        return logits


# --------------------------------------------------------------------------- routing margins

def min_margins(model: Model, token_lists: Sequence[Sequence[int]]) -> dict:
    """Smallest top-k margin (k-th minus (k+1)-th softmax probability) over every token
    of every list and every layer (selection is by probability). Dropless routing: one
    prefill per list routes every token exactly as decode does.
    Returns {"topk_margin", "where": (list, layer), "total": tokens*layers}."""
    k = model.cfg["top_k"]
    best = {"topk_margin": math.inf, "where": None, "total": 0}
    for li, toks in enumerate(token_lists):
        tr: list = []
        model.forward(toks, trace=tr)
        for t in tr:
            best["total"] += t["probs"].shape[0]
            m = topk_margin(t["probs"], k)
            if m < best["topk_margin"]:
                best["topk_margin"], best["where"] = m, (li, t["layer"])
    return best


# --------------------------------------------------------------------------- fixtures

def master_weight(name: str, shape, c: dict, seed: int) -> np.ndarray:
    """Deterministic float32 master values of logical tensor `name` (its own (seed, name)
    generator, so tensors stream one at a time).

    Embedding N(0, 1/d) (less of the "predict the current token" bias of a tied random
    embedding); norms U(0.8, 1.2); router
    N(0, 2/d) (router logits of std ~1.4: clear top-2 choices); projections
    N(0, 1/fan_in), o_proj and down_proj halved."""
    r = tensor_rng(seed, name)
    shape = tuple(shape)
    d = c["d_model"]

    def normal(std):
        return (r.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    if name == "model.embed_tokens.weight":
        return normal(1.0 / math.sqrt(d))
    if name.endswith("norm.weight"):
        return r.uniform(0.8, 1.2, size=shape).astype(np.float32)
    if name.endswith("mlp.router.weight"):
        return normal(math.sqrt(2.0 / d))
    std = 1.0 / math.sqrt(shape[-1])
    if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
        std *= 0.5
    return normal(std)


def bits_config(c: dict) -> dict:
    """What the __metadata__ "bits_config" string says (informational only)."""
    return {"embedding": 4, "q_proj": 4, "k_proj": 4,
            "v_proj": [vo_bits(i, c["n_layers"]) for i in range(c["n_layers"])],
            "o_proj": [vo_bits(i, c["n_layers"]) for i in range(c["n_layers"])],
            "routed_experts": 1, "shared_expert": 4, "router": 16, "norms": 16}


def model_config(c: dict, packing: dict) -> dict:
    """config.json: MLX-style sizes and settings + our "packing" block."""
    out = collections.OrderedDict(model_type="ssmoelm", architectures=["SSMoELM"])
    for k in SIZE_KEYS:
        out[k] = c[k]
    out["n_shared_experts"] = 1
    out["rope_theta"] = c["rope_theta"]
    out["norm_eps"] = c["norm_eps"]
    out["max_seq_len"] = c["max_seq_len"]
    out["tie_word_embeddings"] = True
    out["packing"] = dict(packing)
    return dict(out)


TOKENIZER_CONFIG = {  # spec §5 special tokens: <bos>=0, <eos>=1, <pad>=2
    "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": MAX_SEQ_LEN,
    "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
    "additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>", "<|eot|>"],
}


def file_entries(c: dict, seed: int, packing: dict, prefix: str = "") -> Dict[str, LazyTensor]:
    """name -> LazyTensor of every file entry. A packed tensor's 4 entries share one
    quantisation (a one-slot memo: the writer visits them in sorted order, adjacently)."""
    memo: Dict[str, Dict[str, np.ndarray]] = {}

    def packed(name, shape, storage):
        if name not in memo:
            memo.clear()
            memo[name] = packed_entries(name, master_weight(name, shape, c, seed), storage, packing)
        return memo[name]

    out: Dict[str, LazyTensor] = {}
    for name, (shape, storage) in tensor_specs(c).items():
        if storage == "f16":
            out[prefix + name] = LazyTensor("F16", shape, (lambda n=name, s=shape:
                                                          master_weight(n, s, c, seed).astype(np.float16)))
            continue
        rows, cols = shape
        n = rows * cols
        codes = ("__bin", (n + 7) // 8) if storage == "bin" else ("__int4", (n + 1) // 2)
        for suffix, tag, shp in (("__scale", "F16", (rows,)), (codes[0], "U8", (codes[1],)),
                                 ("__shape", "I32", (2,)), ("__cols", "I32", (1,))):
            out[prefix + name + suffix] = LazyTensor(
                tag, shp, (lambda n_=name, s=shape, st=storage, k=name + suffix: packed(n_, s, st)[k]))
    return out


def write_fixture(out_dir: str, preset: Union[str, dict] = "tiny", seed: int = 1, *,
                  prefix: str = "", bit_order: str = "msb_first", nibble_order: str = "low_first",
                  int4_code: str = "twos_complement", tokenizer_config: bool = True,
                  sizes: Optional[dict] = None, check_tokens=None, margin_min: float = MARGIN_MIN,
                  verbose: bool = False) -> dict:
    """Write model.safetensors (packed, see the module docstring), config.json and
    tokenizer_config.json of a random model into out_dir (created).

    prefix:        prepended to every tensor key (e.g. "_orig_mod.")
    bit_order, nibble_order, int4_code: the packing (also stored in config.json "packing")
    check_tokens:  token lists; a seed whose min top-k probability margin is below
                   margin_min is rejected and seed+1 tried (up to MAX_TRIES times)
    Tensors are produced one at a time while writing, so "full" never sits in memory.
    Returns {"seed", "files", "params", "active", "cfg", "margins"}."""
    c = preset_config(preset, **(sizes or {}))
    packing = resolve_packing(bit_order, nibble_order, int4_code)
    os.makedirs(out_dir, exist_ok=True)
    margins = None
    for _ in range(MAX_TRIES if check_tokens else 1):
        files = []
        write_safetensors(os.path.join(out_dir, "model.safetensors"), file_entries(c, seed, packing, prefix),
                          metadata={"format": "pt", "bits_config": json.dumps(bits_config(c))})
        files.append("model.safetensors")
        write_json(os.path.join(out_dir, "config.json"), model_config(c, packing))
        files.append("config.json")
        if tokenizer_config:
            write_json(os.path.join(out_dir, "tokenizer_config.json"), TOKENIZER_CONFIG)
            files.append("tokenizer_config.json")
        if not check_tokens:
            break
        margins = min_margins(Model.from_dir(out_dir), check_tokens)
        if verbose:
            print(f"ssmoelm fixture: seed {seed}: min top-k margin {margins['topk_margin']:.3g}",
                  file=sys.stderr)
        if margins["topk_margin"] >= margin_min:
            break
        seed += 1
    else:
        raise ValueError(f"no seed passes the routing margin check after {MAX_TRIES} tries")
    total, active = param_counts(c)
    return {"seed": seed, "files": files, "params": total, "active": active, "cfg": c, "margins": margins}


# --------------------------------------------------------------------------- CLI

def write_dequantized(model_dir: str, out_dir: str) -> None:
    """The f32 architecture twin of a packed checkpoint (what a float build of the same
    model reads): config and tokenizer files copied, packed tensors dequantized."""
    import shutil
    path = os.path.join(model_dir, "model.safetensors")
    tensors, metadata = read_safetensors(path, return_metadata=True)
    with open(os.path.join(model_dir, "config.json")) as f:
        packing = json.load(f).get("packing")
    prefix = detect_prefix(tensors.keys())
    weights, _ = dequantize_tensors(tensors, packing, prefix)
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(model_dir):
        if name != "model.safetensors" and os.path.isfile(os.path.join(model_dir, name)):
            shutil.copy(os.path.join(model_dir, name), out_dir)
    write_safetensors(os.path.join(out_dir, "model.safetensors"),
                      {prefix + k: v.float().numpy() for k, v in weights.items()}, metadata)


def _parse_lists(text: str):
    return [[int(x) for x in part.split(",") if x.strip()] for part in text.split(";") if part.strip()]


def _packing_args(p: argparse.ArgumentParser, defaults: dict) -> None:
    """--bit-order, --nibble-order, --int4-code with the given defaults (None: unset)."""
    p.add_argument("--bit-order", choices=sorted(BIT_ORDERS), default=defaults.get("bit_order"))
    p.add_argument("--nibble-order", choices=NIBBLE_ORDERS, default=defaults.get("nibble_order"))
    p.add_argument("--int4-code", choices=INT4_CODES, default=defaults.get("int4_code"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="SSMoELM reference and fixture generator")
    sub = ap.add_subparsers(dest="cmd", required=True)
    fx = sub.add_parser("fixture", help="write a random-weight packed checkpoint directory")
    fx.add_argument("--out", required=True)
    fx.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    fx.add_argument("--seed", type=int, default=1)
    fx.add_argument("--prefix", default="")
    _packing_args(fx, DEFAULT_PACKING)
    fx.add_argument("--check-tokens", default=None, metavar="'1,2,3;4,5'")
    lg = sub.add_parser("logits", help="reference logits as raw float32 LE [T, vocab]")
    lg.add_argument("--model", required=True)
    lg.add_argument("--tokens", required=True)
    lg.add_argument("--out", required=True)
    lg.add_argument("--decode", action="store_true")
    _packing_args(lg, {})        # unset: config.json "packing", else the defaults
    dq = sub.add_parser("dequantize", help="write the checkpoint's f32 twin: every packed "
                        "tensor as the float32 weights it stands for, under its plain name")
    dq.add_argument("--model", required=True)
    dq.add_argument("--out", required=True)
    ct = sub.add_parser("counts", help="print total and active parameter counts")
    ct.add_argument("--preset", choices=sorted(PRESETS), default="full")
    a = ap.parse_args(argv)
    t0 = time.time()
    try:
        if a.cmd == "fixture":
            info = write_fixture(a.out, a.preset, a.seed, prefix=a.prefix, bit_order=a.bit_order,
                                 nibble_order=a.nibble_order, int4_code=a.int4_code,
                                 check_tokens=_parse_lists(a.check_tokens) if a.check_tokens else None,
                                 verbose=True)
            print(f"seed {info['seed']}")
            print(f"params {info['params']:,} (active {info['active']:,}); wrote "
                  f"{', '.join(info['files'])} to {a.out} in {time.time() - t0:.1f}s")
        elif a.cmd == "logits":
            m = Model.from_dir(a.model, bit_order=a.bit_order, nibble_order=a.nibble_order,
                               int4_code=a.int4_code)
            return write_logits(m, a.tokens, a.decode, a.out, "ssmoelm",
                                f"packing={m.packing} ")
        elif a.cmd == "dequantize":
            write_dequantized(a.model, a.out)
        else:
            print("%d %d" % param_counts(a.preset))
    except ValueError as e:
        print(f"ssmoelm: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
