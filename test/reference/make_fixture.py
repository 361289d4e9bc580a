#!/usr/bin/python3
"""Random-weight moe100m-physics checkpoints in the published on-disk format.

Writes DIR/model.safetensors (keys exactly as spec §3: tied embedding without an
lm_head key, stacked routed experts `blocks.{i}.ffn.{gate,up,down}` without `.weight`,
`router.w` / `router.bias`, `attn.smear`, QK-norm `weight` + `gain`) and DIR/config.json
(the MoEModelConfig fields of spec §2 with the fixture's real values + "_model_class").

    /usr/bin/python3 test/reference/make_fixture.py --out DIR [--seed N]
        [--preset tiny|tiny2|full] [--set key=value ...] [--prefix _orig_mod.]
        [--dtype F32|F16|BF16] [--layout grouped|legacy]
        [--check-tokens "1,2,3,4;5,6,7"]

--check-tokens: run the reference on each token list and require, at every token and
MoE layer, a top-k margin (k-th minus (k+1)-th selection score, logits + bias) of at
least 1e-3, and that router.bias changes at least one selection versus no bias. On
failure retry with seed+1 (up to 50 tries). The seed used is printed.

Each tensor is drawn from its own generator keyed by (seed, tensor name), so tensors
are produced one at a time and streamed to disk (the `full` preset writes ~1 GB with
only one tensor in memory unless --check-tokens needs the whole model).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time

import numpy as np
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from safetensors_io import LazyTensor, write_safetensors  # noqa: E402
from physics_model import PhysicsModel  # noqa: E402
from reference_common import round_to, tensor_rng, topk_margin, write_json  # noqa: E402

# MoEModelConfig fields in spec §2 order, with the scaffold's training-only values.
BASE_CONFIG = {
    "vocab_size": 512, "d_model": 640, "n_layers": 14, "n_q_heads": 10, "n_kv_heads": 2,
    "head_dim": 64, "rope_partial": 32, "rope_theta": 10000.0, "d_ff": 1024,
    "n_routed_experts": 8, "n_shared_experts": 1, "top_k": 2, "moe_first_layer": 1,
    "router_z_coef": 0.001, "router_noise_std": 0.0, "router_aux_coef": 0.001,
    "bias_update_rate": 0.001, "max_seq_len": 1024, "tie_embeddings": True, "rms_eps": 1e-06,
    "init_std": 0.02, "mup_base_d": 512, "attn_backend": "sdpa", "moe_backend": "grouped",
    "moe_capacity_factor": 1.25, "smear_gate": True, "use_chunked_ce": True,
    "ce_chunk_tokens": 512, "ce_checkpoint_chunks": True, "use_liger_ce": True,
}

PRESETS = {
    "tiny": dict(vocab_size=100, d_model=64, n_layers=3, n_q_heads=4, n_kv_heads=2, head_dim=16,
                 rope_partial=8, d_ff=40, n_routed_experts=4, top_k=2, moe_first_layer=1,
                 max_seq_len=256, mup_base_d=48, rope_theta=10000.0, rms_eps=1e-6),
    "tiny2": dict(vocab_size=77, d_model=72, n_layers=2, n_q_heads=6, n_kv_heads=2, head_dim=12,
                  rope_partial=6, d_ff=24, n_routed_experts=5, top_k=2, moe_first_layer=1,
                  max_seq_len=128, mup_base_d=64, rope_theta=500.0, rms_eps=1e-5),
    # the published size (spec §2): 246,183,748 parameters, 92,829,508 active
    "full": dict(vocab_size=512, d_model=640, n_layers=14, n_q_heads=10, n_kv_heads=2, head_dim=64,
                 rope_partial=32, d_ff=1024, n_routed_experts=8, top_k=2, moe_first_layer=1,
                 max_seq_len=1024, mup_base_d=512, rope_theta=10000.0, rms_eps=1e-6),
}

FULL_PARAMS = 246_183_748
FULL_ACTIVE_PARAMS = 92_829_508
MARGIN_MIN = 1e-3
MAX_TRIES = 50


def make_config(preset: str = "tiny", sets=None) -> dict:
    cfg = dict(BASE_CONFIG)
    cfg.update(PRESETS[preset])
    for key, value in (sets or {}).items():
        if key not in BASE_CONFIG:
            raise ValueError(f"--set {key}: not a MoEModelConfig field (known: {', '.join(BASE_CONFIG)})")
        cfg[key] = value
    validate_config(cfg)
    return cfg


def validate_config(c: dict) -> None:
    for k in ("vocab_size", "d_model", "n_layers", "n_q_heads", "n_kv_heads", "head_dim", "d_ff"):
        if not isinstance(c[k], int) or c[k] <= 0:
            raise ValueError(f"{k}={c[k]!r} must be a positive integer")
    if c["n_q_heads"] % c["n_kv_heads"]:
        raise ValueError("n_q_heads must be a multiple of n_kv_heads")
    if c["rope_partial"] % 2 or not 0 <= c["rope_partial"] <= c["head_dim"]:
        raise ValueError("rope_partial must be even and <= head_dim")
    if not 0 <= c["moe_first_layer"] <= c["n_layers"]:
        raise ValueError("moe_first_layer must be in 0..n_layers")
    if c["moe_first_layer"] < c["n_layers"] and not 1 <= c["top_k"] <= c["n_routed_experts"]:
        raise ValueError("top_k must be in 1..n_routed_experts")


def tensor_shapes(c: dict, layout: str = "grouped") -> dict:
    """name -> shape of every stored tensor (spec §3). router.bias is a buffer, stored too."""
    V, D, H, Hkv, hd = c["vocab_size"], c["d_model"], c["n_q_heads"], c["n_kv_heads"], c["head_dim"]
    F, E = c["d_ff"], c["n_routed_experts"]
    s = {"embed.weight": (V, D), "final_norm.weight": (D,)}
    if not c["tie_embeddings"]:
        s["lm_head.weight"] = (V, D)
    for i in range(c["n_layers"]):
        p = f"blocks.{i}."
        s[p + "attn_norm.weight"] = (D,)
        s[p + "attn.q_proj.weight"] = (H * hd, D)
        s[p + "attn.k_proj.weight"] = (Hkv * hd, D)
        s[p + "attn.v_proj.weight"] = (Hkv * hd, D)
        s[p + "attn.o_proj.weight"] = (D, H * hd)
        s[p + "attn.q_norm.weight"] = (H, hd)
        s[p + "attn.q_norm.gain"] = (H, 1)
        s[p + "attn.k_norm.weight"] = (Hkv, hd)
        s[p + "attn.k_norm.gain"] = (Hkv, 1)
        if c["smear_gate"]:
            s[p + "attn.smear"] = (Hkv,)
        s[p + "ffn_norm.weight"] = (D,)
        if i < c["moe_first_layer"]:
            s[p + "ffn.gate.weight"] = (F, D)
            s[p + "ffn.up.weight"] = (F, D)
            s[p + "ffn.down.weight"] = (D, F)
            continue
        if layout == "grouped":
            s[p + "ffn.gate"] = (E, F, D)
            s[p + "ffn.up"] = (E, F, D)
            s[p + "ffn.down"] = (E, D, F)
        else:  # legacy "bmm" layout, spec §3 last paragraph
            for e in range(E):
                s[p + f"ffn.routed_experts.{e}.gate.weight"] = (F, D)
                s[p + f"ffn.routed_experts.{e}.up.weight"] = (F, D)
                s[p + f"ffn.routed_experts.{e}.down.weight"] = (D, F)
        if c["n_shared_experts"] > 0:   # the scaffold builds ONE shared expert when n_shared > 0
            s[p + "ffn.shared_expert.gate.weight"] = (F, D)
            s[p + "ffn.shared_expert.up.weight"] = (F, D)
            s[p + "ffn.shared_expert.down.weight"] = (D, F)
        s[p + "ffn.router.w"] = (E, D)
        s[p + "ffn.router.bias"] = (E,)
    return s


def count_params(c: dict, active: bool = False) -> int:
    """nn.Parameter count of the scaffold model, computed analytically (router.bias is a
    buffer and not counted). active=True counts routed experts at top_k/E (spec header)."""
    V, D, H, Hkv, hd = c["vocab_size"], c["d_model"], c["n_q_heads"], c["n_kv_heads"], c["head_dim"]
    F, E, K = c["d_ff"], c["n_routed_experts"], c["top_k"]
    L, L0 = c["n_layers"], c["moe_first_layer"]
    attn = (2 * H * hd * D + 2 * Hkv * hd * D          # q, o ; k, v
            + H * hd + H + Hkv * hd + Hkv              # q_norm/k_norm weight + gain
            + (Hkv if c["smear_gate"] else 0) + 2 * D)  # smear, attn_norm, ffn_norm
    swiglu = 3 * F * D
    routed = E * swiglu
    if active:
        routed = routed * K // E
    moe = routed + (swiglu if c["n_shared_experts"] > 0 else 0) + E * D
    head = 0 if c["tie_embeddings"] else V * D
    return V * D + head + D + L * attn + L0 * swiglu + (L - L0) * moe


# --------------------------------------------------------------------------- initialisation

def init_tensor(name: str, shape, c: dict, seed: int) -> np.ndarray:
    """Deterministic well-conditioned random values for tensor `name` (unprefixed).

    Scales: projections ~ N(0, 1/fan_in) so their outputs have unit variance (output
    projections halved); embedding std 1/sqrt(D) so tied logits have std ~ logit_scale;
    norm weights U(0.9, 1.1); QK gains and smear U(0.8, 1.2); router.w ~ N(0, 1/D) so
    router logits have std ~1, router.bias U(-1, 1): comparable to the router logit
    spread, so it changes the top-k selection for a good fraction of tokens."""
    r = tensor_rng(seed, name)
    D = c["d_model"]
    shape = tuple(shape)

    def normal(std):
        return (r.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def uniform(lo, hi):
        return r.uniform(lo, hi, size=shape).astype(np.float32)

    leaf = name.rsplit(".", 1)[-1]
    if name in ("embed.weight", "lm_head.weight"):
        return normal(1.0 / math.sqrt(D))
    if name.endswith("norm.weight"):          # attn_norm, ffn_norm, final_norm, q_norm, k_norm
        return uniform(0.9, 1.1)
    if leaf == "gain" or leaf == "smear":
        return uniform(0.8, 1.2)
    if name.endswith("router.bias"):
        return uniform(-1.0, 1.0)
    if name.endswith("router.w"):
        return normal(1.0 / math.sqrt(D))
    # linear weights [.., out, in]: fan_in is the last axis
    fan_in = shape[-1]
    std = 1.0 / math.sqrt(fan_in)
    if "o_proj" in name or name.endswith("down") or name.endswith("down.weight"):
        std *= 0.5
    return normal(std)


_LEGACY = re.compile(r"^(blocks\.\d+\.ffn)\.routed_experts\.(\d+)\.(gate|up|down)\.weight$")


def tensor_value(name: str, shape, c: dict, seed: int) -> np.ndarray:
    """init_tensor, except that legacy per-expert tensors are slices of the stacked
    tensor, so both layouts of one seed hold the same model."""
    m = _LEGACY.match(name)
    if m:
        e = int(m.group(2))
        stacked = init_tensor(f"{m.group(1)}.{m.group(3)}", (c["n_routed_experts"],) + tuple(shape), c, seed)
        return np.ascontiguousarray(stacked[e])
    return init_tensor(name, shape, c, seed)


def build_state_dict(c: dict, seed: int, layout: str, dtype: str) -> dict:
    return {n: round_to(tensor_value(n, s, c, seed), dtype) for n, s in tensor_shapes(c, layout).items()}


# --------------------------------------------------------------------------- routing check

def check_routing(model: PhysicsModel, token_lists) -> dict:
    """Top-k margin and bias effect over every token list, token and MoE layer."""
    k = model.dims.top_k
    min_margin = math.inf
    changed = 0
    total = 0
    for toks in token_lists:
        trace = []
        model.forward(toks, trace=trace)
        for t in trace:
            sel, logits = t["sel"], t["logits"]
            E = sel.shape[1]
            total += sel.shape[0]
            if k < E:
                min_margin = min(min_margin, topk_margin(sel, k))
                nobias = torch.topk(logits, k, dim=-1).indices.sort(dim=-1).values
                biased = t["idx"].sort(dim=-1).values
                changed += int((nobias != biased).any(dim=-1).sum())
    return {"min_margin": min_margin, "changed": changed, "total": total}


def parse_token_lists(text: str):
    lists = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        lists.append([int(x) for x in part.split(",") if x.strip()])
    if not lists:
        raise ValueError("--check-tokens: no token lists")
    return lists


def parse_sets(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v           # bare strings such as attn_backend=sdpa
    return out


def write_fixture(out_dir: str, c: dict, seed: int, prefix: str = "", layout: str = "grouped",
                  dtype: str = "F32", state_dict: dict = None) -> int:
    """Write model.safetensors + config.json into out_dir. Returns the weights file size."""
    os.makedirs(out_dir, exist_ok=True)
    shapes = tensor_shapes(c, layout)
    tensors = {}
    for name, shape in shapes.items():
        if state_dict is not None:
            value = state_dict[name]
            tensors[prefix + name] = LazyTensor(dtype, shape, (lambda v=value: v))
        else:
            tensors[prefix + name] = LazyTensor(
                dtype, shape, (lambda n=name, s=shape: tensor_value(n, s, c, seed)))
    size = write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors,
                             metadata={"format": "pt"})
    cfg = dict(c)
    cfg["_model_class"] = "MoEModel"
    write_json(os.path.join(out_dir, "config.json"), cfg)
    return size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory (created; files overwritten)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a MoEModelConfig field (value parsed as JSON)")
    ap.add_argument("--prefix", default="", help="prefix every key, e.g. _orig_mod. or module.")
    ap.add_argument("--dtype", choices=["F32", "F16", "BF16"], default="F32")
    ap.add_argument("--layout", choices=["grouped", "legacy"], default="grouped",
                    help="routed experts stacked (grouped, default) or per-expert legacy keys")
    ap.add_argument("--check-tokens", default=None, metavar="'1,2,3;4,5'",
                    help="semicolon-separated token lists that must route with margin >= 1e-3")
    args = ap.parse_args(argv)

    t0 = time.time()
    try:
        c = make_config(args.preset, parse_sets(args.set))
    except ValueError as e:
        print(f"make_fixture: {e}", file=sys.stderr)
        return 2
    n_params = count_params(c)
    n_active = count_params(c, active=True)
    seed = args.seed
    state_dict = None
    if args.check_tokens:
        lists = parse_token_lists(args.check_tokens)
        bad = [t for l in lists for t in l if not 0 <= t < c["vocab_size"]]
        if bad:
            print(f"make_fixture: --check-tokens ids {bad[:5]} out of range [0, {c['vocab_size']})", file=sys.stderr)
            return 2
        has_moe = c["moe_first_layer"] < c["n_layers"]
        need_bias = has_moe and c["top_k"] < c["n_routed_experts"]
        if not need_bias:
            print("make_fixture: note: no MoE layer with top_k < n_experts: margin/bias checks are vacuous",
                  file=sys.stderr)
        for attempt in range(MAX_TRIES):
            sd = build_state_dict(c, seed, args.layout, args.dtype)
            model = PhysicsModel(sd, c)
            res = check_routing(model, lists)
            ok = res["min_margin"] >= MARGIN_MIN and (res["changed"] > 0 or not need_bias)
            print(f"make_fixture: seed {seed}: min top-k margin {res['min_margin']:.3g}, "
                  f"bias changed {res['changed']}/{res['total']} selections -> {'ok' if ok else 'retry'}",
                  file=sys.stderr)
            if ok:
                state_dict = sd
                break
            del model, sd
            seed += 1
        else:
            print(f"make_fixture: no seed in {args.seed}..{seed - 1} passes the routing checks", file=sys.stderr)
            return 1
    size = write_fixture(args.out, c, seed, args.prefix, args.layout, args.dtype, state_dict)
    dt = time.time() - t0
    print(f"seed {seed}")
    print(f"params {n_params:,} (active {n_active:,}); stored tensor elements "
          f"{n_params + (c['n_layers'] - c['moe_first_layer']) * c['n_routed_experts']:,} incl. router.bias buffers")
    print(f"wrote {args.out}/model.safetensors ({size:,} bytes, {args.dtype}, {args.layout}"
          f"{', prefix ' + args.prefix if args.prefix else ''}) and config.json in {dt:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
