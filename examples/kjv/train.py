#!/usr/bin/python3
"""Train a small Mixture-of-Experts language model on the King James Bible.

The model is a miniature of the moe100m-physics family (the ml-intern "Qwen3-style"
MoE scaffold; see shared/seeds/specs/moe100m-physics-tinybpe.md) and is written out in
that family's exact on-disk format, so `moec compile` takes it like the published one:

    model.safetensors      F16, the family's tensor names (stacked experts, router.w,
                           router.bias, attn.smear, q_norm.gain, tied embedding)
    config.json            the MoEModelConfig fields + "_model_class"
    tokenizer.json         a byte-level BPE (GPT-2 style) trained here, in the format
                           Hugging Face `tokenizers` saves
    tokenizer_config.json

Everything is done by this one file with Debian's python3-torch and numpy only:

    1. run `bible -f Gen1:1-Rev22:21` (Debian package bible-kjv) and make one
       document per chapter;
    2. train the tokenizer (GPT-2 pre-tokenizer, greedy BPE merges, 2048 tokens);
    3. train the model (AdamW, warmup + cosine, aux-loss-free router balancing);
    4. export, then reload the export with the project's independent reference
       (test/reference/physics_model.py), check that its logits equal the trained
       model's, and let it continue "And it came to pass".

    /usr/bin/python3 examples/kjv/train.py [--out DIR] [--minutes 25] [--steps N] [--smoke]

The run is seeded (initialisation and the order of the training windows). Without
--steps it trains for --minutes of wall time, so how many steps that is depends on the
machine and on what else runs on it; with --steps N the learning-rate schedule is
defined by steps, not time, and does not depend on the machine's speed.
"""
from __future__ import annotations

import argparse
import collections
import heapq
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
REFERENCE_DIR = os.path.join(ROOT, "test", "reference")
sys.path.insert(0, REFERENCE_DIR)
# The project's own safetensors writer and the family's independent reference: the
# export is checked against the same code the compiled executables are checked against.
from make_fixture import BASE_CONFIG, count_params, tensor_shapes  # noqa: E402
from physics_model import PhysicsModel  # noqa: E402
from safetensors_io import write_safetensors  # noqa: E402
# GPT-2's byte -> printable character map (' ' becomes 'Ġ'), as the fixtures use it.
from fixture_tokenizers import bytes_to_unicode  # noqa: E402

SEED = 1611  # the year the King James Version was published
EOT = "<|endoftext|>"  # id 0: starts every document

# Model and training settings. Field names are the family's MoEModelConfig fields, so this
# dict (plus the BASE_CONFIG fields the scaffold only uses in training) is config.json.
MODEL = dict(
    vocab_size=2048, d_model=192, n_layers=4, n_q_heads=4, n_kv_heads=2, head_dim=64,
    rope_partial=32, rope_theta=10000.0, d_ff=256, n_routed_experts=4, n_shared_experts=1,
    top_k=2, moe_first_layer=1, max_seq_len=256, tie_embeddings=True, rms_eps=1e-6,
    init_std=0.02, mup_base_d=512, smear_gate=True,
    # The scaffold's default balancing step, 1e-3, suits long runs; in a run of ~2k steps
    # it is too slow to bring back an expert the router has dropped (seen here: a layer
    # with an expert at 0% load), 1e-2 is not.
    router_z_coef=1e-3, router_noise_std=0.0, router_aux_coef=0.0, bias_update_rate=1e-2,
    # Training here is dropless (every expert runs on every token, see MoE.forward); a
    # capacity factor of E/top_k tells the scaffold to be dropless too.
    moe_backend="grouped", moe_capacity_factor=2.0,
    attn_backend="sdpa", use_chunked_ce=False, ce_chunk_tokens=512,
    ce_checkpoint_chunks=False, use_liger_ce=False,
)
TRAIN = dict(batch=8, lr=3e-3, min_lr_frac=0.1, warmup=100, weight_decay=0.1,
             betas=(0.9, 0.95), grad_clip=1.0, eval_every=100)

# --smoke: the whole pipeline on a sliver of the data, in a few seconds.
SMOKE_MODEL = dict(vocab_size=400, d_model=64, n_layers=2, n_q_heads=4, n_kv_heads=2,
                   head_dim=16, rope_partial=8, d_ff=64, max_seq_len=64, mup_base_d=48)
SMOKE_CHAPTERS = 60
SMOKE_STEPS = 40


def log(msg: str) -> None:
    print(msg, flush=True)


# =========================================================================== 1. data

VERSE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")


def read_bible() -> str:
    """Every verse, one a line, as `Ge1:1 In the beginning ...`."""
    if shutil.which("bible") is None:
        sys.exit("train.py: the `bible` program is not installed; run `bash .ci/install-deps --train`")
    run = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True)
    if run.returncode != 0 or not run.stdout.strip():
        sys.exit(f"train.py: `bible -f Gen1:1-Rev22:21` failed ({run.returncode}): {run.stderr.strip()}"
                 "\n(is bible-kjv-text installed? `bash .ci/install-deps --train`)")
    return run.stdout


def chapters_of(verses: str) -> List[str]:
    """One paragraph per chapter: the verse references are dropped and the chapter's
    verses joined by single spaces (the text has a few double and trailing spaces)."""
    chapters: Dict[Tuple[str, int], List[str]] = {}
    for line in verses.splitlines():
        if not line.strip():
            continue
        m = VERSE.match(line)
        if not m:
            raise ValueError(f"unexpected line from `bible`: {line[:80]!r}")
        chapters.setdefault((m.group(1), int(m.group(2))), []).append(" ".join(m.group(4).split()))
    return [" ".join(v) for v in chapters.values()]


# =========================================================================== 2. tokenizer

# GPT-2's pre-tokenizer is
#     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# Python's `re` has no \p{..}. On ASCII text \p{L} is exactly [A-Za-z] and \p{N} exactly
# [0-9], and for printable ASCII plus \t \n \r \v \f `re`'s \s agrees with the Unicode
# White_Space that Hugging Face's regex engine uses. So on such text this pattern splits
# exactly as GPT-2's does; `pretokenize` refuses any other character.
GPT2_SPLIT_ASCII = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")
SAFE_CHARS = set(chr(c) for c in range(0x20, 0x7F)) | set("\t\n\r\x0b\x0c")


def pretokenize(text: str) -> List[str]:
    bad = set(text) - SAFE_CHARS
    if bad:
        raise ValueError(f"pretokenize handles printable ASCII only; got {sorted(bad)[:5]}")
    return GPT2_SPLIT_ASCII.findall(text)


class ByteLevelBPE:
    """A trained byte-level BPE: `tokens[i]` is token i's text in GPT-2's byte alphabet,
    `merges[r]` the pair of ids merged at rank r (into id `first_merge_id + r`)."""

    def __init__(self, tokens: List[str], merges: List[Tuple[int, int]]):
        self.tokens = tokens
        self.merges = merges
        self.byte_to_char = bytes_to_unicode()
        self.char_to_byte = {c: b for b, c in self.byte_to_char.items()}
        self.ids = {t: i for i, t in enumerate(tokens)}
        first = len(tokens) - len(merges)
        self.rank = {pair: (r, first + r) for r, pair in enumerate(merges)}
        self.cache: Dict[str, List[int]] = {}

    def initial_ids(self, word: str) -> List[int]:
        return [self.ids[self.byte_to_char[b]] for b in word.encode("utf-8")]

    def encode_word(self, word: str) -> List[int]:
        """Apply merges by rank, lowest first; equal pairs left to right. This is how
        Hugging Face's BPE model encodes (and GPT-2's original `bpe()`)."""
        if word in self.cache:
            return self.cache[word]
        ids = self.initial_ids(word)
        while len(ids) > 1:
            ranked = [self.rank[p] for p in zip(ids, ids[1:]) if p in self.rank]
            if not ranked:
                break
            r, new_id = min(ranked)
            ids = merge_pair(ids, self.merges[r], new_id)
        self.cache[word] = ids
        return ids

    def encode(self, text: str) -> List[int]:
        return [i for w in pretokenize(text) for i in self.encode_word(w)]

    def decode(self, ids) -> str:
        data = bytes(self.char_to_byte[c] for i in ids if int(i) != 0 for c in self.tokens[int(i)])
        return data.decode("utf-8", errors="replace")


def merge_pair(ids: List[int], pair: Tuple[int, int], new_id: int) -> List[int]:
    """Replace every occurrence of `pair` in `ids`, scanning left to right."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe(texts: List[str], vocab_size: int) -> ByteLevelBPE:
    """Greedy BPE on the pre-tokenized words of `texts`.

    Ids: 0 = <|endoftext|>, 1..256 the byte alphabet ordered by code point (the order
    Hugging Face's trainer gives it), then one token per merge. Each round merges the
    most frequent adjacent pair; ties go to the smallest (left id, right id), as in
    Hugging Face's trainer. Pair counts are updated incrementally: only the words that
    contain the merged pair are recounted, and a heap with lazy deletion finds the best
    pair."""
    counts = collections.Counter(w for t in texts for w in pretokenize(t))
    byte_to_char = bytes_to_unicode()
    tokens = [EOT] + sorted(byte_to_char.values())
    index = {t: i for i, t in enumerate(tokens)}
    words = [[index[byte_to_char[b]] for b in w.encode("utf-8")] for w in counts]
    freq = list(counts.values())

    pair_count: Dict[Tuple[int, int], int] = collections.Counter()
    holders: Dict[Tuple[int, int], set] = collections.defaultdict(set)  # pair -> word indices
    for wi, w in enumerate(words):
        for p in zip(w, w[1:]):
            pair_count[p] += freq[wi]
            holders[p].add(wi)
    heap = [(-c, a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)

    merges: List[Tuple[int, int]] = []
    while len(tokens) < vocab_size and heap:
        neg, a, b = heapq.heappop(heap)
        if pair_count.get((a, b), 0) != -neg or neg == 0:
            continue  # stale heap entry: the count changed since it was pushed
        new_id = len(tokens)
        tokens.append(tokens[a] + tokens[b])
        merges.append((a, b))
        touched = set()
        for wi in holders.pop((a, b)):
            old = words[wi]
            new = merge_pair(old, (a, b), new_id)
            if len(new) == len(old):
                continue  # the word lost this pair in an earlier merge
            for p in zip(old, old[1:]):
                pair_count[p] -= freq[wi]
                touched.add(p)
            for p in zip(new, new[1:]):
                pair_count[p] += freq[wi]
                holders[p].add(wi)
                touched.add(p)
            words[wi] = new
        for p in touched:
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], p[0], p[1]))
            else:
                pair_count.pop(p, None)
    bpe = ByteLevelBPE(tokens, merges)
    # The encoder must reproduce what training did to every word it saw.
    for w, seg in zip(counts, words):
        if bpe.encode_word(w) != seg:
            raise AssertionError(f"BPE encoder disagrees with the trainer on {w!r}")
    return bpe


def tokenizer_json(bpe: ByteLevelBPE) -> dict:
    """The tokenizer as Hugging Face `tokenizers` saves a ByteLevelBPETokenizer."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": 0, "content": EOT, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": dict(byte_level, add_prefix_space=True, trim_offsets=False),
        "decoder": dict(byte_level, add_prefix_space=True),
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(bpe.tokens)},
            "merges": [f"{bpe.tokens[a]} {bpe.tokens[b]}" for a, b in bpe.merges],
        },
    }


# =========================================================================== 3. model
# The math is the family's (spec §4, test/reference/physics_model.py); the parameter and
# buffer names are its checkpoint names, so state_dict() is the checkpoint.

# Multiplicative scales (start at 1, no weight decay); the 2-D ones are QK-norm's.
SCALE_PARAMS = ("norm.weight", "norm.gain", "smear")


def rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return rms(x, self.eps) * self.weight


class QKNorm(nn.Module):
    """Per-head RMSNorm over head_dim, times a per-(head, dim) weight and a per-head gain."""

    def __init__(self, heads: int, head_dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(heads, head_dim))
        self.gain = nn.Parameter(torch.ones(heads, 1))

    def forward(self, x):  # [B, T, heads, head_dim]
        return rms(x, self.eps) * (self.weight * self.gain)  # one pass over x, not two


def rope_tables(c: dict, T: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [T, 1, rope_partial/2]; frequencies are based on the rotated span."""
    rd = c["rope_partial"]
    inv = torch.pow(torch.tensor(c["rope_theta"], dtype=torch.float64),
                    -2.0 * torch.arange(rd // 2, dtype=torch.float64) / rd)
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv)
    return torch.cos(ang).float()[:, None, :], torch.sin(ang).float()[:, None, :]


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rd: int) -> torch.Tensor:
    """Partial RoPE with interleaved pairs (2j, 2j+1) on dims [0, rd); the rest passes."""
    even, odd = x[..., 0:rd:2], x[..., 1:rd:2]
    rotated = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)
    return torch.cat((rotated, x[..., rd:]), dim=-1)


class Attention(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        D, H, Hkv, hd = c["d_model"], c["n_q_heads"], c["n_kv_heads"], c["head_dim"]
        self.H, self.Hkv, self.hd, self.rd = H, Hkv, hd, c["rope_partial"]
        self.q_proj = nn.Linear(D, H * hd, bias=False)
        self.k_proj = nn.Linear(D, Hkv * hd, bias=False)
        self.v_proj = nn.Linear(D, Hkv * hd, bias=False)
        self.o_proj = nn.Linear(H * hd, D, bias=False)
        self.q_norm = QKNorm(H, hd, c["rms_eps"])
        self.k_norm = QKNorm(Hkv, hd, c["rms_eps"])
        self.smear = nn.Parameter(torch.ones(Hkv))  # per-kv-head scale on V

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.hd)
        k = self.k_proj(x).view(B, T, self.Hkv, self.hd)
        v = self.v_proj(x).view(B, T, self.Hkv, self.hd)
        q = rope(self.q_norm(q), cos, sin, self.rd)  # QK-norm BEFORE RoPE
        k = rope(self.k_norm(k), cos, sin, self.rd)
        v = v * self.smear[:, None]
        # GQA: query head h reads kv head h // (H / Hkv)
        G = self.H // self.Hkv
        q = q.transpose(1, 2)                                   # [B, H, T, hd]
        k = k.transpose(1, 2).repeat_interleave(G, dim=1)
        v = v.transpose(1, 2).repeat_interleave(G, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        p = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        o = (p @ v).transpose(1, 2).reshape(B, T, self.H * self.hd)
        return self.o_proj(o)


class SwiGLU(nn.Module):
    def __init__(self, d: int, f: int):
        super().__init__()
        self.gate = nn.Linear(d, f, bias=False)
        self.up = nn.Linear(d, f, bias=False)
        self.down = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Router(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.w = nn.Parameter(torch.empty(c["n_routed_experts"], c["d_model"]))
        # Aux-loss-free balancing bias: a buffer (stored in the checkpoint, not trained by
        # the optimizer), added to the logits for the top-k choice only.
        self.register_buffer("bias", torch.zeros(c["n_routed_experts"]))


class MoE(nn.Module):
    """Sigmoid-routed top-k experts plus one always-on, ungated shared expert.

    Experts are stacked ([E, F, D] / [E, D, F], the family's "grouped" layout). With
    only a few experts it is fastest on a CPU to run all of them on every token and
    give the unselected ones weight 0: the result is the dropless top-k MoE."""

    def __init__(self, c: dict):
        super().__init__()
        E, D, Fd = c["n_routed_experts"], c["d_model"], c["d_ff"]
        self.E, self.Fd, self.k = E, Fd, c["top_k"]
        self.gate = nn.Parameter(torch.empty(E, Fd, D))
        self.up = nn.Parameter(torch.empty(E, Fd, D))
        self.down = nn.Parameter(torch.empty(E, D, Fd))
        self.shared_expert = SwiGLU(D, Fd)
        self.router = Router(c)
        self.load = torch.zeros(E)      # last batch: fraction of tokens per expert
        self.z_loss = torch.zeros(())   # last batch: mean logsumexp(router logits)^2

    def forward(self, h):
        B, T, D = h.shape
        x = h.reshape(B * T, D)
        logits = x @ self.router.w.t()
        scores = torch.sigmoid(logits)
        chosen = torch.topk(logits + self.router.bias, self.k, dim=-1).indices  # bias: choice only
        mask = torch.zeros_like(scores).scatter_(1, chosen, 1.0)
        w = scores * mask                                         # unbiased sigmoid scores
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-9)
        # all experts at once: [N, D] x [D, E*F], weight, then [N, E*F] x [E*F, D]
        a = F.silu(x @ self.gate.view(-1, D).t()) * (x @ self.up.view(-1, D).t())
        a = (a.view(-1, self.E, self.Fd) * w[:, :, None]).view(-1, self.E * self.Fd)
        routed = a @ self.down.transpose(1, 2).reshape(-1, D)
        self.load = mask.mean(dim=0).detach()
        self.z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean()
        return (routed + self.shared_expert(x)).view(B, T, D)


class Block(nn.Module):
    def __init__(self, c: dict, moe: bool):
        super().__init__()
        self.attn_norm = RMSNorm(c["d_model"], c["rms_eps"])
        self.attn = Attention(c)
        self.ffn_norm = RMSNorm(c["d_model"], c["rms_eps"])
        self.ffn = MoE(c) if moe else SwiGLU(c["d_model"], c["d_ff"])

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.ffn(self.ffn_norm(x))


class KJVMoE(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c["vocab_size"], c["d_model"])
        self.blocks = nn.ModuleList(Block(c, i >= c["moe_first_layer"]) for i in range(c["n_layers"]))
        self.final_norm = RMSNorm(c["d_model"], c["rms_eps"])
        self.logit_scale = math.sqrt(c["mup_base_d"] / c["d_model"])  # applied at inference too
        cos, sin = rope_tables(c, c["max_seq_len"])
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    def init_weights(self):
        """N(0, init_std) everywhere, output projections scaled by 1/sqrt(2 n_layers)
        (GPT-2); norms, QK gains and smear start at 1, router biases at 0."""
        std = self.c["init_std"]
        for name, p in self.named_parameters():
            if p.dim() < 2 or name.endswith(SCALE_PARAMS):
                continue
            s = std / math.sqrt(2 * self.c["n_layers"]) if ("o_proj" in name or "down" in name) else std
            nn.init.normal_(p, 0.0, s)

    def forward(self, ids):
        T = ids.shape[1]
        x = self.embed(ids)
        for blk in self.blocks:
            x = blk(x, self.rope_cos[:T], self.rope_sin[:T])
        x = self.final_norm(x)
        return (x @ self.embed.weight.t()) * self.logit_scale

    def moe_layers(self) -> List[MoE]:
        return [b.ffn for b in self.blocks if isinstance(b.ffn, MoE)]


# =========================================================================== 4. training

def split_documents(docs: List[List[int]]) -> Tuple[List[List[int]], List[List[int]]]:
    """Hold out every 100th chapter (from the 50th on: spread over the whole book)."""
    val = [d for i, d in enumerate(docs) if i % 100 == 50]
    train = [d for i, d in enumerate(docs) if i % 100 != 50]
    return train, val


def batch_from(stream: torch.Tensor, B: int, T: int, gen: torch.Generator):
    """B random windows of T+1 tokens: inputs and next-token targets."""
    starts = torch.randint(0, stream.numel() - T - 1, (B,), generator=gen)
    win = torch.stack([stream[s:s + T + 1] for s in starts.tolist()])
    return win[:, :-1], win[:, 1:]


@torch.no_grad()
def evaluate(model: KJVMoE, val: torch.Tensor, T: int, B: int = 16) -> float:
    """Mean next-token loss over the held-out stream, cut into windows of T+1 tokens."""
    model.eval()
    n = (val.numel() - 1) // T
    total, count = 0.0, 0
    for i in range(0, n, B):
        rows = [val[j * T:j * T + T + 1] for j in range(i, min(n, i + B))]
        win = torch.stack(rows)
        logits = model(win[:, :-1])
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), win[:, 1:].reshape(-1),
                                 reduction="sum").item()
        count += win[:, 1:].numel()
    model.train()
    return total / count


def make_optimizer(model: KJVMoE, t: dict) -> torch.optim.AdamW:
    """Weight decay on weight matrices only: not on norms, QK-norm gains, smear."""
    named = list(model.named_parameters())
    decay = [p for n, p in named if p.dim() >= 2 and not n.endswith(SCALE_PARAMS)]
    other = [p for n, p in named if p.dim() < 2 or n.endswith(SCALE_PARAMS)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": t["weight_decay"]},
                              {"params": other, "weight_decay": 0.0}], lr=t["lr"], betas=t["betas"])


def lr_at(step: int, progress: float, t: dict) -> float:
    """Linear warmup over the first steps, times a cosine decay from the peak to
    min_lr_frac of it over the run (progress 0 -> 1)."""
    warm = min(1.0, (step + 1) / t["warmup"])
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return t["lr"] * warm * (t["min_lr_frac"] + (1 - t["min_lr_frac"]) * cosine)


@torch.no_grad()
def balance_routers(model: KJVMoE, rate: float) -> None:
    """Aux-loss-free load balancing: push each expert's selection bias towards the mean
    load (top_k / E of the tokens) by a fixed step."""
    for moe in model.moe_layers():
        target = moe.load.sum() / moe.E
        moe.router.bias += rate * torch.sign(target - moe.load)


class ThreadPicker:
    """Picks 1 or 2 threads, whichever is faster right now.

    The machine is shared (2 cores; a compiler may be building beside us). With both
    cores idle two threads are ~1.7x faster than one, but with one core busy every
    parallel region waits for the thread that got half a core, and two threads are ~2x
    SLOWER than one. So every `every` steps the other setting is timed for `probe` steps
    and the faster one is kept."""

    def __init__(self, every: int = 50, probe: int = 3):
        self.every, self.probe = every, probe
        self.n, self.times = 2, {1: [], 2: []}
        self.probing_since = None
        torch.set_num_threads(self.n)

    def after_step(self, step: int, seconds: float) -> None:
        self.times[self.n].append(seconds)
        if self.probing_since is None and step % self.every == 0:
            self.probing_since, self.n = step, 3 - self.n          # try the other setting
        elif self.probing_since is not None and step - self.probing_since >= self.probe:
            other = 3 - self.n
            if median(self.times[self.n][-self.probe:]) > median(self.times[other][-self.probe:]):
                self.n = other                                     # the probe lost: go back
            self.probing_since = None
        torch.set_num_threads(self.n)


def median(xs: List[float]) -> float:
    return sorted(xs)[len(xs) // 2] if xs else math.inf


def train(model: KJVMoE, train_ids: torch.Tensor, val_ids: torch.Tensor, t: dict,
          steps: int, minutes: float) -> dict:
    """Train for `steps` steps, or (steps=None) for `minutes` of wall time. The cosine
    schedule runs on the fraction of the run done: of the steps, or of the time, so a
    timed run ends on schedule however busy the machine is."""
    c = model.c
    T, B = c["max_seq_len"], t["batch"]
    opt = make_optimizer(model, t)
    gen = torch.Generator().manual_seed(SEED)
    threads = ThreadPicker()
    t0 = time.time()

    def progress(step):
        return step / steps if steps else (time.time() - t0) / (60 * minutes)

    recent, step = [], 0
    while progress(step) < 1:
        t_step = time.time()
        lr = lr_at(step, progress(step), t)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch_from(train_ids, B, T, gen)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        z = sum(m.z_loss for m in model.moe_layers())
        opt.zero_grad(set_to_none=True)
        (loss + c["router_z_coef"] * z).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
        opt.step()
        balance_routers(model, c["bias_update_rate"])
        recent.append(loss.item())
        step += 1
        threads.after_step(step, time.time() - t_step)
        if step % t["eval_every"] == 0:
            loads = " ".join("/".join(f"{v:.2f}" for v in m.load.tolist()) for m in model.moe_layers())
            log(f"step {step:5d}  lr {lr:.2e}  train {np.mean(recent):.3f}  "
                f"val {evaluate(model, val_ids, T):.3f}  expert load {loads}  "
                f"{threads.n} thr  {time.time() - t0:5.0f}s")
            recent = []
    torch.set_num_threads(2)
    return {"steps": step, "val_loss": evaluate(model, val_ids, T),
            "train_seconds": time.time() - t0, "tokens": step * B * T}


# =========================================================================== 5. export

def export(model: KJVMoE, bpe: ByteLevelBPE, out: str) -> Dict[str, torch.Tensor]:
    """model.safetensors (F16) + config.json + tokenizer.json + tokenizer_config.json.
    Returns the stored weights as float32 (what a reader gets back)."""
    os.makedirs(out, exist_ok=True)
    c = model.c
    sd = {k: v.detach().to(torch.float16) for k, v in model.state_dict().items()}
    expected = tensor_shapes(config_json(c))  # the family's names and shapes, from the fixture writer
    got = {k: tuple(v.shape) for k, v in sd.items()}
    if got != {k: tuple(s) for k, s in expected.items()}:
        raise AssertionError(f"state dict differs from the family layout: "
                             f"{sorted(set(got) ^ set(expected))[:5]}")
    write_safetensors(os.path.join(out, "model.safetensors"), sd, metadata={"format": "pt"})
    write_json(os.path.join(out, "config.json"), config_json(c))
    write_json(os.path.join(out, "tokenizer.json"), tokenizer_json(bpe), indent=None)
    write_json(os.path.join(out, "tokenizer_config.json"),
               {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOT, "bos_token": None,
                "model_max_length": c["max_seq_len"]})
    return {k: v.float() for k, v in sd.items()}


def config_json(c: dict) -> dict:
    """Every MoEModelConfig field (BASE_CONFIG order) with the values trained with."""
    cfg = {k: c.get(k, v) for k, v in BASE_CONFIG.items()}
    cfg["_model_class"] = "MoEModel"
    return cfg


def write_json(path: str, obj, indent=2) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


# =========================================================================== 6. verify

def verify(model: KJVMoE, stored: Dict[str, torch.Tensor], out: str, probe: List[int]) -> float:
    """The reference, loaded from `out`, must give the trained model's logits (with the
    F16-rounded weights). Returns the max abs difference relative to the logit range."""
    model.load_state_dict(stored)
    model.eval()
    with torch.no_grad():
        ours = model(torch.tensor([probe]))[0]
    ref = PhysicsModel.from_dir(out)
    theirs = ref.forward(probe)
    diff = (ours - theirs).abs().max().item()
    span = (theirs.max() - theirs.min()).item()
    log(f"verify: reference {ref.dims.summary()}")
    log(f"verify: logits on {len(probe)} held-out tokens: max |diff| {diff:.2e}, logit range {span:.1f}")
    if not diff < 1e-3 * span:
        raise AssertionError(f"exported model disagrees with the trained one: {diff} vs range {span}")
    return diff / span


def greedy(ref: PhysicsModel, prompt: List[int], n: int) -> List[int]:
    """Greedy continuation through the reference's token-by-token (KV cache) path."""
    cache = ref.new_cache(len(prompt) + n)
    ids = list(prompt)
    for tok in prompt[:-1]:
        cache.step(tok)
    for _ in range(n):
        ids.append(int(cache.step(ids[-1]).argmax()))
    return ids


# =========================================================================== main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="output directory (default examples/kjv/model; "
                                                "a temporary directory with --smoke)")
    ap.add_argument("--minutes", type=float, default=25.0, help="training time budget (default 25)")
    ap.add_argument("--steps", type=int, default=None, help="train exactly this many steps")
    ap.add_argument("--smoke", action="store_true", help="tiny end-to-end run (a few seconds)")
    args = ap.parse_args(argv)

    t_start = time.time()
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    c = dict(MODEL, **(SMOKE_MODEL if args.smoke else {}))
    t = dict(TRAIN, **(dict(eval_every=10, warmup=10) if args.smoke else {}))
    out = args.out or (tempfile.mkdtemp(prefix="kjv-smoke-") if args.smoke
                       else os.path.join(ROOT, "examples", "kjv", "model"))

    chapters = chapters_of(read_bible())
    log(f"data: {len(chapters)} chapters, {sum(map(len, chapters)):,} characters")
    if args.smoke:
        chapters = chapters[:SMOKE_CHAPTERS]

    t0 = time.time()
    bpe = train_bpe(chapters, c["vocab_size"])
    docs = [[0] + bpe.encode(ch) for ch in chapters]
    train_docs, val_docs = split_documents(docs)
    train_ids = torch.tensor([i for d in train_docs for i in d])
    val_ids = torch.tensor([i for d in val_docs for i in d])
    log(f"tokenizer: {len(bpe.tokens)} tokens ({len(bpe.merges)} merges) in {time.time() - t0:.0f}s; "
        f"{train_ids.numel():,} training tokens, {val_ids.numel():,} validation tokens "
        f"({len(val_docs)} chapters), {sum(map(len, chapters)) / sum(map(len, docs)):.2f} characters/token")

    model = KJVMoE(c)
    cfg = config_json(c)
    log(f"model: {count_params(cfg):,} parameters, {count_params(cfg, active=True):,} active per token")
    steps = args.steps or (SMOKE_STEPS if args.smoke else None)
    result = train(model, train_ids, val_ids, t, steps, args.minutes)
    log(f"trained {result['steps']} steps ({result['tokens']:,} tokens) in {result['train_seconds']:.0f}s: "
        f"val loss {result['val_loss']:.4f}, perplexity {math.exp(result['val_loss']):.2f}")

    stored = export(model, bpe, out)
    probe = val_docs[0][:64]
    verify(model, stored, out, probe)
    ref = PhysicsModel.from_dir(out)
    prompt = [0] + bpe.encode("And it came to pass")
    text = bpe.decode(greedy(ref, prompt, 60))
    log(f"sample (reference, greedy): {text}")
    log(f"wrote {out}: " + ", ".join(f"{f} {os.path.getsize(os.path.join(out, f)):,} B"
                                     for f in sorted(os.listdir(out))))
    log(f"total wall time {time.time() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
