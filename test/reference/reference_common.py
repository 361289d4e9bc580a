#!/usr/bin/python3
"""Plumbing shared by the family references (physics, moonlight, slimmoe, linnet).

Only helpers that are the same for every family live here: checkpoint key clean-up,
token-id checks, the per-tensor seeded generator of the fixture writers, dtype
rounding, JSON files, the KV-cache bookkeeping of the token-by-token decoders and the
top-k routing margin. The model math (norms, RoPE, attention, routing, experts) stays
written out in each family's own module, so each one remains an independent
statement of that family's spec.
"""
from __future__ import annotations

import json
import math
import os
import sys
import zlib
from typing import Dict, Optional

import numpy as np
import torch

# Key prefixes added by torch.compile ("_orig_mod.") and DDP ("module.").
KEY_PREFIXES = ("_orig_mod.", "module.")


def strip_prefixes(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove any stack of "_orig_mod." / "module." prefixes from every key."""
    out = {}
    for key, value in state_dict.items():
        k = key
        changed = True
        while changed:
            changed = False
            for p in KEY_PREFIXES:
                if k.startswith(p):
                    k = k[len(p):]
                    changed = True
        if k in out:
            raise ValueError(f"key {key!r} collides with another key after prefix stripping ({k!r})")
        out[k] = value
    return out


def tensor_getter(sd: Dict[str, torch.Tensor], used: set):
    """get(name, shape=None, optional=False): tensor `name` of state dict `sd`, checked to
    be floating point and (if given) of `shape`, and recorded in `used`; a missing tensor
    is a ValueError, or None when optional."""

    def get(name, shape=None, optional=False):
        if name not in sd:
            if optional:
                return None
            raise ValueError(f"checkpoint is missing tensor {name!r}")
        t = sd[name]
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise ValueError(f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        if not t.is_floating_point():
            raise ValueError(f"tensor {name!r} has non-float dtype {t.dtype}")
        used.add(name)
        return t

    return get


def check_tokens(tokens, vocab: int, max_len: Optional[int] = None) -> torch.Tensor:
    """`tokens` (a sequence or 1-D tensor of ids) as a 1-D int64 tensor; ValueError when
    empty, not 1-D, out of [0, vocab) or (with max_len) longer than max_len."""
    ids = torch.as_tensor(tokens if isinstance(tokens, torch.Tensor) else list(tokens), dtype=torch.long)
    if ids.dim() != 1 or ids.numel() == 0:
        raise ValueError("need a non-empty 1-D list of token ids")
    bad = [int(t) for t in ids if not 0 <= int(t) < vocab]
    if bad:
        raise ValueError(f"token ids {bad[:5]} out of range [0, {vocab})")
    if max_len is not None and ids.numel() > max_len:
        raise ValueError(f"{ids.numel()} tokens exceed ctx_size {max_len}")
    return ids


# --------------------------------------------------------------------------- fixtures

def tensor_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one fixture tensor, keyed by (seed, tensor name), so any tensor
    can be produced alone (and streamed to disk one at a time)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def round_to(arr, dtype: str) -> torch.Tensor:
    """float32 tensor holding what a reader gets back after storing `arr` (a float32
    numpy array or tensor) as safetensors dtype `dtype` ("F32", "F16" or "BF16")."""
    t = torch.as_tensor(arr)
    if dtype == "F16":
        return t.half().float()
    if dtype == "BF16":
        return t.bfloat16().float()
    return t.float()


def write_json(path: str, obj) -> None:
    """`obj` as indented JSON + newline, written to path.tmp and renamed into place."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_config_json(path: str, required_because: Optional[str] = None) -> Optional[dict]:
    """config.json of checkpoint directory `path`, or the one next to weights file `path`.

    Absent: None, or ValueError "<file>: not found (<required_because>)" when given."""
    cfg_path = os.path.join(path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)),
                            "config.json")
    if not os.path.isfile(cfg_path):
        if required_because is not None:
            raise ValueError(f"{cfg_path}: not found ({required_because})")
        return None
    with open(cfg_path, "r", encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------- decoding

class TokenByTokenDecode:
    """Mixin for a reference model with `_check_tokens(tokens)` and `new_cache(capacity)`
    (an object whose `step(token)` returns that position's logits)."""

    def decode(self, tokens) -> torch.Tensor:
        """Logits [T, V] computed one token at a time through a KV cache."""
        ids = self._check_tokens(tokens)
        cache = self.new_cache(ids.numel())
        return torch.stack([cache.step(int(t)) for t in ids], dim=0)


class KVCacheBase:
    """Bookkeeping of a fixed-size KV cache: per layer of `model.layers` a K and a V
    buffer [n_kv_heads, capacity, head_dim] (float32 zeros), the next position `pos`,
    and the checks before a step. What is cached and the step's math are the family's."""

    def __init__(self, model, capacity: int, n_kv_heads: int, head_dim: int,
                 max_positions: Optional[int] = None):
        self.model = model
        self.capacity = capacity
        self.limit = capacity if max_positions is None else min(capacity, max_positions)
        self.pos = 0
        self.k = [torch.zeros(n_kv_heads, capacity, head_dim) for _ in model.layers]
        self.v = [torch.zeros(n_kv_heads, capacity, head_dim) for _ in model.layers]

    def check_step(self, token: int, vocab: int) -> None:
        if self.pos >= self.limit:
            raise ValueError(f"KV cache full ({self.limit} positions)")
        if not 0 <= token < vocab:
            raise ValueError(f"token id {token} out of range [0, {vocab})")


# --------------------------------------------------------------------------- routing margins

def topk_margin(scores: torch.Tensor, k: int) -> float:
    """min over rows of (k-th minus (k+1)-th largest score) of scores [N, E]; inf when
    k >= E (every expert is selected, nothing can flip)."""
    if k >= scores.shape[1]:
        return math.inf
    top = torch.topk(scores, k + 1, dim=-1).values
    return float((top[:, k - 1] - top[:, k]).min())


def write_logits(model, tokens_text: str, decode: bool, out: str, name: str,
                 describe: str = "") -> int:
    """The `logits` command of a reference CLI: prefill (or token-by-token decode)
    logits of comma-separated `tokens_text`, written to `out` as raw float32 LE
    [T, vocab] through a temporary file. Returns the process exit code (1 on
    non-finite logits)."""
    toks = [int(t) for t in tokens_text.split(",") if t.strip()]
    arr = (model.decode(toks) if decode else model.forward(toks)).numpy().astype("<f4")
    if not np.isfinite(arr).all():
        print(f"{name} logits: non-finite logits", file=sys.stderr)
        return 1
    with open(out + ".tmp", "wb") as f:
        f.write(arr.tobytes())
    os.replace(out + ".tmp", out)
    print(f"{name} logits: {'decode' if decode else 'prefill'} T={len(toks)} {model.cfg} "
          f"{describe}argmax(last)={int(arr[-1].argmax())} -> {out}", file=sys.stderr)
    return 0
