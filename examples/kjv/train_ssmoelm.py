#!/usr/bin/python3
"""Train a small SSMoELM-architecture model on the King James Bible, with its weights
learnt as they ship: 1-bit routed experts and inner-layer V/O, 4-bit everything else.

The published SSMoELM was trained with quantization-aware training (its card: "BitNet
b1.58 style, forward pass uses quantized values, gradients flow through master weights
via straight-through estimator"). This does the same at a small size, so that moec has a
trained model in that family's exact packed format (shared/seeds/specs/SSMoELM.md):
random-weight fixtures predict almost uniformly, and what int8 inputs cost a packed
model (issue 6: top-1 agreement >= 99% against f32 inputs) can only be measured on one
that predicts something.

    model.safetensors      packed: {key}__scale (f16 per row) + __bin / __int4 codes,
                           __shape, __cols; router and norms F16 (the spec's names)
    config.json            sizes and settings, with the "packing" block
    tokenizer.json         examples/kjv's byte-level BPE with SSMoELM's special tokens
                           (<bos> 0, <eos> 1, <pad> 2, <|system|> 3, <|user|> 4,
                           <|assistant|> 5, <|eot|> 6) before it: every kjv id + 6
    tokenizer_config.json

    /usr/bin/python3 examples/kjv/train_ssmoelm.py [--out DIR] [--minutes 15] [--steps N]

(the default DIR is examples/kjv/ssmoelm).

It reads the text as examples/kjv/train.py does (one document per chapter, every 100th
held out), tokenizes it with examples/kjv/model/tokenizer.json, trains, exports, and
reloads the export with the project's reference (test/reference/ssmoelm_model.py) to
check that its logits are the trained model's.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "test", "reference"))
# The KJV text, its split and the training helpers are train.py's; the packing, the
# config and the reference are the ones the compiled executables are tested against.
from train import (ByteLevelBPE, ThreadPicker, batch_from, chapters_of, evaluate,  # noqa: E402
                   log, lr_at, read_bible, split_documents)
from safetensors_io import write_safetensors  # noqa: E402
from ssmoelm_model import (DEFAULT_PACKING, TOKENIZER_CONFIG, Model, bits_config,  # noqa: E402
                           model_config, packed_entries, param_counts, preset_config,
                           tensor_specs)

SEED = 1611
SPECIALS = ["<bos>", "<eos>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|eot|>"]
KJV_TOKENIZER = os.path.join(HERE, "model", "tokenizer.json")
# Every projection's columns are whole blocks of 32, so moec's int8 inputs reach all of
# them (d_model 256, d_ff 128); 4 layers give two inner layers with 1-bit V/O.
SIZES = dict(d_model=256, n_layers=4, n_heads=4, n_kv_heads=1, head_dim=64, n_experts=8,
             top_k=2, d_ff=128, max_seq_len=256)
TRAIN = dict(batch=16, lr=2e-3, min_lr_frac=0.1, warmup=100, weight_decay=0.05, betas=(0.9, 0.95),
             grad_clip=1.0, balance_coef=0.01, eval_every=100)


# =========================================================================== tokenizer

def kjv_tokenizer() -> tuple:
    """examples/kjv's BPE (ids as trained there) and its tokenizer.json."""
    with open(KJV_TOKENIZER) as f:
        spec = json.load(f)
    vocab = spec["model"]["vocab"]
    tokens = [None] * len(vocab)
    for text, i in vocab.items():
        tokens[i] = text
    merges = [tuple(vocab[p] for p in (m.split(" ") if isinstance(m, str) else m))
              for m in spec["model"]["merges"]]
    return ByteLevelBPE(tokens, merges), spec


def ssmoelm_tokenizer_json(spec: dict) -> dict:
    """The kjv tokenizer.json with SSMoELM's specials as ids 0-6 and every other kjv id
    moved up by 6 (kjv's own <|endoftext|>, id 0, is dropped: <bos> starts a chapter)."""
    shift = len(SPECIALS) - 1
    out = json.loads(json.dumps(spec))
    out["added_tokens"] = [dict(spec["added_tokens"][0], id=i, content=t) for i, t in enumerate(SPECIALS)]
    vocab = {t: i + shift for t, i in spec["model"]["vocab"].items() if i > 0}
    vocab.update({t: i for i, t in enumerate(SPECIALS)})
    out["model"]["vocab"] = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    return out


# =========================================================================== model

def fake_sign1(w: torch.Tensor) -> torch.Tensor:
    """1-bit as ssmoelm_model.quantize_sign1 stores it: f16 mean|row| times the sign
    (w >= 0 is +1); the gradient passes straight through to w."""
    scale = w.abs().mean(dim=1, keepdim=True).half().float()
    q = torch.where(w >= 0, scale, -scale)
    return w + (q - w).detach()


def fake_int4(w: torch.Tensor) -> torch.Tensor:
    """4-bit as ssmoelm_model.quantize_int4 stores it: f16 max|row| / 7, codes in
    [-7, 7] rounded half to even; straight-through gradient."""
    scale = (w.abs().amax(dim=1, keepdim=True) / 7).half().float()
    q = torch.clamp(torch.round(w / torch.where(scale > 0, scale, torch.ones_like(scale))), -7, 7)
    return w + (q * scale - w).detach()


FAKE = {"int4": fake_int4, "bin": fake_sign1}


class PackedLinear(nn.Module):
    """A [out, in] weight used as it is stored (`storage` "int4" or "bin")."""

    def __init__(self, rows: int, cols: int, storage: str, std: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(rows, cols) * std)
        self.storage = storage

    def stored(self) -> torch.Tensor:
        return FAKE[self.storage](self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.stored().T


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split RoPE on [B, H, T, hd] (the family's layout)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class Layer(nn.Module):
    def __init__(self, c: dict, storage: Dict[str, str], i: int):
        super().__init__()
        d, F_, E, hd = c["d_model"], c["d_ff"], c["n_experts"], c["head_dim"]
        H, Hkv = c["n_heads"], c["n_kv_heads"]
        p = f"model.layers.{i}."
        s = lambda name: storage[p + name + ".weight"]  # noqa: E731
        self.c = c
        self.ln1 = nn.Parameter(torch.ones(d))
        self.ln2 = nn.Parameter(torch.ones(d))
        self.q = PackedLinear(H * hd, d, s("self_attn.q_proj"), d ** -0.5)
        self.k = PackedLinear(Hkv * hd, d, s("self_attn.k_proj"), d ** -0.5)
        self.v = PackedLinear(Hkv * hd, d, s("self_attn.v_proj"), d ** -0.5)
        self.o = PackedLinear(d, H * hd, s("self_attn.o_proj"), 0.5 * (H * hd) ** -0.5)
        self.router = nn.Parameter(torch.randn(E, d) * d ** -0.5)
        ex = "mlp.experts.{}."
        self.gate = nn.ModuleList(PackedLinear(F_, d, s(ex.format(e) + "gate_proj"), d ** -0.5) for e in range(E))
        self.up = nn.ModuleList(PackedLinear(F_, d, s(ex.format(e) + "up_proj"), d ** -0.5) for e in range(E))
        self.down = nn.ModuleList(PackedLinear(d, F_, s(ex.format(e) + "down_proj"), 0.5 * F_ ** -0.5)
                                  for e in range(E))
        self.s_gate = PackedLinear(F_, d, s("mlp.shared_expert.gate_proj"), d ** -0.5)
        self.s_up = PackedLinear(F_, d, s("mlp.shared_expert.up_proj"), d ** -0.5)
        self.s_down = PackedLinear(d, F_, s("mlp.shared_expert.down_proj"), 0.5 * F_ ** -0.5)
        self.balance = torch.zeros(())
        self.load = torch.zeros(E)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        c = self.c
        B, T, d = x.shape
        H, Hkv, hd, k_top, E = c["n_heads"], c["n_kv_heads"], c["head_dim"], c["top_k"], c["n_experts"]
        h = rms_norm(x, self.ln1, c["norm_eps"])
        q = rope(self.q(h).view(B, T, H, hd).transpose(1, 2), cos, sin)
        k = rope(self.k(h).view(B, T, Hkv, hd).transpose(1, 2), cos, sin)
        v = self.v(h).view(B, T, Hkv, hd).transpose(1, 2)
        k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
        mask = torch.full((T, T), float("-inf")).triu(1)
        y = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, dim=-1) @ v
        x = x + self.o(y.transpose(1, 2).reshape(B, T, H * hd))

        h2 = rms_norm(x, self.ln2, c["norm_eps"])
        probs = torch.softmax(h2 @ self.router.T, dim=-1)                  # [B, T, E]
        top, idx = torch.topk(probs, k_top, dim=-1)
        gates = torch.zeros_like(probs).scatter(-1, idx, top / top.sum(dim=-1, keepdim=True))
        # Every expert on every token, weighted by its gate (zero unless chosen): at this
        # size one dense product per expert is faster on a CPU than gathering tokens.
        out = self.s_down(F.silu(self.s_gate(h2)) * self.s_up(h2))
        for e in range(E):
            out = out + gates[..., e:e + 1] * self.down[e](F.silu(self.gate[e](h2)) * self.up[e](h2))
        # Switch Transformer's balance loss: E * sum_e (share of choices) * (mean prob).
        chosen = torch.zeros_like(probs).scatter(-1, idx, 1.0).mean(dim=(0, 1)) / k_top
        self.balance = E * (chosen * probs.mean(dim=(0, 1))).sum()
        self.load = chosen.detach() * k_top
        return x + out


class SSMoELM(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.c = c
        self.specs = tensor_specs(c)
        storage = {name: st for name, (_, st) in self.specs.items()}
        self.embed = PackedLinear(c["vocab_size"], c["d_model"], storage["model.embed_tokens.weight"],
                                  c["d_model"] ** -0.5)
        self.layers = nn.ModuleList(Layer(c, storage, i) for i in range(c["n_layers"]))
        self.norm = nn.Parameter(torch.ones(c["d_model"]))
        hd = c["head_dim"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        ang = torch.arange(c["max_seq_len"], dtype=torch.float32)[:, None] * inv.float()[None, :]
        self.register_buffer("cos", torch.cat([ang.cos(), ang.cos()], dim=-1), persistent=False)
        self.register_buffer("sin", torch.cat([ang.sin(), ang.sin()], dim=-1), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        table = self.embed.stored()                                         # tied, 4-bit
        x = table[ids]
        cos, sin = self.cos[:T], self.sin[:T]
        for layer in self.layers:
            x = layer(x, cos, sin)
        return rms_norm(x, self.norm, self.c["norm_eps"]) @ table.T

    def stored_weights(self) -> Dict[str, np.ndarray]:
        """Logical name -> master weight (f32), in tensor_specs' names."""
        out = {"model.embed_tokens.weight": self.embed.weight, "model.norm.weight": self.norm}
        for i, L in enumerate(self.layers):
            p = f"model.layers.{i}."
            out.update({p + "input_layernorm.weight": L.ln1, p + "post_attention_layernorm.weight": L.ln2,
                        p + "self_attn.q_proj.weight": L.q.weight, p + "self_attn.k_proj.weight": L.k.weight,
                        p + "self_attn.v_proj.weight": L.v.weight, p + "self_attn.o_proj.weight": L.o.weight,
                        p + "mlp.router.weight": L.router,
                        p + "mlp.shared_expert.gate_proj.weight": L.s_gate.weight,
                        p + "mlp.shared_expert.up_proj.weight": L.s_up.weight,
                        p + "mlp.shared_expert.down_proj.weight": L.s_down.weight})
            for e in range(self.c["n_experts"]):
                x = p + f"mlp.experts.{e}."
                out.update({x + "gate_proj.weight": L.gate[e].weight, x + "up_proj.weight": L.up[e].weight,
                            x + "down_proj.weight": L.down[e].weight})
        if set(out) != set(self.specs):
            raise AssertionError(f"names differ from tensor_specs: {sorted(set(out) ^ set(self.specs))[:4]}")
        return {k: v.detach().float().numpy() for k, v in out.items()}


# =========================================================================== training

def train(model: SSMoELM, train_ids: torch.Tensor, val_ids: torch.Tensor, steps, minutes: float) -> dict:
    t, T = TRAIN, model.c["max_seq_len"]
    named = list(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [p for n, p in named if p.dim() >= 2], "weight_decay": t["weight_decay"]},
                             {"params": [p for n, p in named if p.dim() < 2], "weight_decay": 0.0}],
                            lr=t["lr"], betas=t["betas"])
    gen = torch.Generator().manual_seed(SEED)
    threads, t0, step, recent = ThreadPicker(), time.time(), 0, []

    def progress(s):
        return s / steps if steps else (time.time() - t0) / (60 * minutes)

    while progress(step) < 1:
        t_step = time.time()
        lr = lr_at(step, progress(step), t)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch_from(train_ids, t["batch"], T, gen)
        with bf16():
            loss = F.cross_entropy(model(x).reshape(-1, model.c["vocab_size"]), y.reshape(-1))
            balance = sum(L.balance for L in model.layers) / len(model.layers)
        opt.zero_grad(set_to_none=True)
        (loss + t["balance_coef"] * balance).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
        opt.step()
        recent.append(loss.item())
        step += 1
        threads.after_step(step, time.time() - t_step)
        if step % t["eval_every"] == 0:
            loads = " ".join("/".join(f"{v:.2f}" for v in L.load.tolist()) for L in model.layers)
            with bf16():
                val = evaluate(model, val_ids, T)
            log(f"step {step:5d}  lr {lr:.2e}  train {np.mean(recent):.3f}  val {val:.3f}"
                f"  expert load {loads}  {threads.n} thr  {time.time() - t0:5.0f}s")
            recent = []
    torch.set_num_threads(2)
    return {"steps": step, "val_loss": evaluate(model, val_ids, T), "seconds": time.time() - t0}


def bf16():
    """Matrix products in bfloat16, as the published model was trained (MLX, bf16): on
    this CPU oneDNN runs them ~40x faster than Debian torch's generic f32 BLAS. The
    master weights, the quantizers and the final evaluation stay f32."""
    return torch.autocast("cpu", dtype=torch.bfloat16)


# =========================================================================== export

def export(model: SSMoELM, spec: dict, out: str) -> None:
    c = model.c
    packing = dict(DEFAULT_PACKING)
    entries = {}
    for name, w in model.stored_weights().items():
        storage = model.specs[name][1]
        entries.update({name: w.astype(np.float16)} if storage == "f16"
                       else packed_entries(name, w, storage, packing))
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "model.safetensors"), entries,
                      metadata={"format": "pt", "bits_config": json.dumps(bits_config(c))})
    files = {"config.json": model_config(c, packing), "tokenizer.json": ssmoelm_tokenizer_json(spec),
             "tokenizer_config.json": dict(TOKENIZER_CONFIG, model_max_length=c["max_seq_len"])}
    for name, obj in files.items():
        with open(os.path.join(out, name), "w") as f:
            json.dump(obj, f, indent=None if name == "tokenizer.json" else 2, ensure_ascii=False)
            f.write("\n")


@torch.no_grad()
def verify(model: SSMoELM, out: str, probe: List[int]) -> float:
    """The export, read back by the reference, computes the trained model's logits (up
    to the f16 rounding of norms and routers)."""
    model.eval()
    ours = model(torch.tensor([probe]))[0]
    ref = Model.from_dir(out).forward(probe)
    diff = (ours - ref).abs().max().item() / ours.abs().max().item()
    log(f"verify: the reference's logits on {len(probe)} held-out tokens differ by {diff:.2e} of their range; "
        f"top-1 agrees at {(ours.argmax(-1) == ref.argmax(-1)).float().mean().item():.1%}")
    if diff > 1e-2:
        raise SystemExit("train_ssmoelm.py: the export does not compute what was trained")
    return diff


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "ssmoelm"), help="output directory (default examples/kjv/ssmoelm)")
    ap.add_argument("--minutes", type=float, default=15.0, help="training time budget (default 15)")
    ap.add_argument("--steps", type=int, default=None, help="train exactly this many steps")
    args = ap.parse_args(argv)
    torch.manual_seed(SEED)
    torch.set_num_threads(2)

    bpe, spec = kjv_tokenizer()
    shift = len(SPECIALS) - 1
    docs = [[0] + [i + shift for i in bpe.encode(ch)] for ch in chapters_of(read_bible())]
    train_docs, val_docs = split_documents(docs)
    train_ids = torch.tensor([i for d in train_docs for i in d])
    val_ids = torch.tensor([i for d in val_docs for i in d])
    c = preset_config(dict(SIZES, vocab_size=len(bpe.tokens) + shift))
    total, active = param_counts(c)
    log(f"data: {train_ids.numel():,} training tokens, {val_ids.numel():,} held out; "
        f"model: {total:,} parameters, {active:,} active per token")

    model = SSMoELM(c)
    result = train(model, train_ids, val_ids, args.steps, args.minutes)
    log(f"trained {result['steps']} steps in {result['seconds']:.0f}s: val loss {result['val_loss']:.4f}, "
        f"perplexity {math.exp(result['val_loss']):.2f}")
    export(model, spec, args.out)
    verify(model, args.out, val_docs[0][:128])
    log(f"wrote {args.out}: " + ", ".join(f"{f} {os.path.getsize(os.path.join(args.out, f)):,} B"
                                          for f in sorted(os.listdir(args.out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
