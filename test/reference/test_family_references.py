#!/usr/bin/python3
"""Self-test of the Moonlight-MoE and SlimMoE references and fixture writers, and of
the text helpers the end-to-end tests share (families.greedy_reply and its repetition
penalties, fixture_tokenizers).

    /usr/bin/python3 test/reference/test_family_references.py [-k SUBSTRING] [-v] [--keep] [--slow]

No pytest needed: every `test_*` function below is run (with --slow also the `slow_*`
ones, which write the full-size fixtures, ~0.6 GB + ~1.2 GB, and take a minute or
two); the last line printed is "N passed, M failed" and the exit code is 0 only if
nothing failed.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import pickletools
import sys
import tempfile
import zipfile

import numpy as np
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import families  # noqa: E402
import fixture_tokenizers  # noqa: E402
import moonlight_model as mm  # noqa: E402
import slimmoe_model as sm  # noqa: E402
from safetensors_io import read_safetensors, read_safetensors_header  # noqa: E402
from selftest import rel_err, run_tests  # noqa: E402

TMP = tempfile.mkdtemp(prefix="moec_family_test_")
TORCH_MAJOR = int(torch.__version__.split(".")[0])


def toks(n, vocab, mul=37, add=5):
    return [(i * mul + add) % vocab for i in range(n)]


def moon(preset="tiny", seed=1, **kw):
    c = mm.make_config(preset)
    return mm.Model(mm.build_state_dict(c, seed), c, **kw), c


def slim(preset="tiny", seed=1, tie="absent", dtype="F32"):
    c = sm.make_config(preset, tie=tie, dtype=dtype)
    return sm.Model(sm.build_state_dict(c, seed, tie, dtype), c), c


def dropping_prompt(m, n):
    """A prompt of length n whose capacity-rule prefill drops at least one assignment."""
    for mul in (37, 11, 7, 3, 1):
        t = toks(n, m.vocab, mul)
        tr = []
        m.forward(t, trace=tr)
        if any(int((~x["kept"]).sum()) for x in tr):
            return t
    raise AssertionError("no dropping prompt found")


# =========================================================================== Moonlight

def test_interleaved_rope_hand_example():
    # hd = 4, base = 100, position 3: theta = [100^0, 100^(-2/4)] = [1, 0.1], angles
    # [3, 0.3]; pairs (x0,x1) and (x2,x3) rotate as complex numbers x0 + i x1, x2 + i x3.
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    a0, a1 = 3.0, 0.3
    expect = torch.tensor([1 * math.cos(a0) - 2 * math.sin(a0), 1 * math.sin(a0) + 2 * math.cos(a0),
                           3 * math.cos(a1) - 4 * math.sin(a1), 3 * math.sin(a1) + 4 * math.cos(a1)])
    for mode in ("fp32", "fp64"):
        ang = mm.rope_angles(torch.tensor([3]), 4, 100, mode)
        assert torch.allclose(ang[0].double(), torch.tensor([3.0, 0.3], dtype=torch.float64), atol=1e-6), ang
        cos, sin = torch.cos(ang).float(), torch.sin(ang).float()
        pre = mm.rope_interleaved(x.view(1, 1, 4), cos, sin).view(4)
        dec = mm.rope_interleaved_complex(x.view(1, 4), ang[0]).view(4)
        assert torch.allclose(pre, expect, atol=1e-6), (mode, pre, expect)
        assert torch.allclose(dec, expect, atol=1e-6), (mode, dec, expect)
    # position 0 is the identity
    ang0 = mm.rope_angles(torch.tensor([0]), 4, 100)
    assert torch.equal(mm.rope_interleaved(x.view(1, 1, 4), torch.cos(ang0), torch.sin(ang0)).view(4), x)


def test_moon_capacity_formula():
    assert mm.capacity(12, 2, 1.25, 6) == 5          # 30/6 = 5 exactly: no rounding up
    assert mm.capacity(13, 2, 1.25, 6) == 6          # ceil(5.4167)
    assert mm.capacity(5, 2, 1.25, 6) == 3           # ceil(2.083)
    assert mm.capacity(1, 2, 1.25, 6) == 1           # decode: t = 1
    assert mm.capacity(1, 1, 0.1, 8) == 1            # the max(., 1) floor
    assert mm.capacity(1024, 2, 1.25, 6) == 427      # full context prefill


def test_moon_capacity_rule_hand_example():
    # 4 tokens, 3 experts, top-2. Router probabilities p (rows sum to 1):
    p = torch.tensor([[0.60, 0.30, 0.10],     # t0 -> e0 .60, e1 .30
                      [0.50, 0.10, 0.40],     # t1 -> e0 .50, e2 .40
                      [0.70, 0.20, 0.10],     # t2 -> e0 .70, e1 .20
                      [0.45, 0.35, 0.20]])    # t3 -> e0 .45, e1 .35
    gate, idx = torch.topk(p, 2, dim=-1)
    # cf 1.0: cap = ceil(4*2*1/3) = 3. e0 has 4 assignments (.70 t2, .60 t0, .50 t1,
    # .45 t3): the lowest, t3's, is dropped. e1 has 3 (t0, t2, t3) = cap: all kept.
    cap = mm.capacity(4, 2, 1.0, 3)
    assert cap == 3
    keep = mm.capacity_keep(gate, idx, 3, cap)
    assert keep.tolist() == [[True, True], [True, True], [True, True], [False, True]], keep
    # cf 0.5: cap = ceil(1.33) = 2. e0 keeps t2 (.70), t0 (.60), drops t1, t3; e1
    # (t0 .30, t2 .20, t3 .35) keeps t3 and t0, drops t2; e2 (t1 .40) kept.
    keep = mm.capacity_keep(gate, idx, 3, mm.capacity(4, 2, 0.5, 3))
    assert keep.tolist() == [[True, True], [False, True], [True, False], [False, True]], keep
    # cf 1.25: cap = ceil(3.33) = 4: nothing dropped.
    assert bool(mm.capacity_keep(gate, idx, 3, mm.capacity(4, 2, 1.25, 3)).all())

    # The same through moe_prefill: router = identity on h = log(p) + 5 (softmax is
    # shift invariant, so probs = p; all h > 0 so ReLU passes), expert e = (e+1) * x.
    h = torch.log(p) + 5.0
    eye = torch.eye(3)
    up = torch.stack([eye] * 3)
    down = torch.stack([(e + 1) * eye for e in range(3)])
    kept = {(0, 0), (0, 1), (1, 0), (1, 2), (2, 0), (2, 1), (3, 1)}     # (token, expert) for cf 1.0
    y, info = mm.moe_prefill(h, eye, up, down, k=2, capacity_factor=1.0)
    assert torch.allclose(info["probs"], p, atol=1e-6)
    expect = torch.stack([sum(float(p[t, e]) * (e + 1) * h[t] for e in range(3) if (t, e) in kept)
                          for t in range(4)])
    assert torch.allclose(y, expect, atol=1e-5), (y, expect)
    # dropless keeps t3's e0 assignment as well
    y2, _ = mm.moe_prefill(h, eye, up, down, k=2, capacity_factor=1.0, dropless=True)
    assert torch.allclose(y2[3], expect[3] + 0.45 * 1 * h[3], atol=1e-5)
    assert torch.allclose(y2[:3], expect[:3], atol=1e-6)


def test_moon_gates_not_renormalised():
    m, _ = moon("tiny")
    tr = []
    m.forward(toks(20, m.vocab), trace=tr)
    for t in tr:
        raw = t["probs"].gather(1, t["experts"])
        assert torch.equal(t["weights"], raw)                 # raw softmax probabilities
        assert float(t["weights"].sum(-1).max()) < 1 - 1e-3  # top-2 of 6: never sums to 1
    # hand check: one token, two experts, k = 1: y = p_top * expert(x), p_top < 1
    h = torch.tensor([[2.0, 0.0]])
    eye = torch.eye(2)
    y, info = mm.moe_prefill(h, eye, torch.stack([eye, eye]), torch.stack([eye, eye]), k=1, capacity_factor=1.0)
    p0 = 1 / (1 + math.exp(-2.0))
    assert torch.allclose(y, torch.tensor([[2.0 * p0, 0.0]]), atol=1e-6), y


def test_moon_forward_equals_decode_dropless():
    for preset in ("tiny", "tiny2"):
        m, _ = moon(preset)
        t = toks(40, m.vocab)
        ref = m.decode(t)
        e = rel_err(m.forward(t, dropless=True), ref)
        assert e <= 1e-5, f"{preset}: dropless prefill vs decode {e:.3g}"
        assert ref.shape == (40, m.vocab) and ref.dtype == torch.float32
        # causality of the dropless prefill
        assert rel_err(m.forward(t[:7], dropless=True), ref[:7]) <= 1e-5


def test_moon_capacity_drops_make_prefill_differ():
    for preset in ("tiny", "tiny2"):
        m, _ = moon(preset)
        t = dropping_prompt(m, 24)
        tr = []
        p = m.forward(t, trace=tr)
        dropped = sum(int((~x["kept"]).sum()) for x in tr)
        assert dropped > 0
        d = m.decode(t)
        assert rel_err(p, d) > 1e-3, f"{preset}: {dropped} drops but prefill == decode"
        assert rel_err(m.forward(t, dropless=True), d) <= 1e-5
        # a 1-token prefill has cap >= 1 with at most one assignment per expert: no drop
        for tok in t[:5]:
            assert rel_err(m.forward([tok]), m.decode([tok])) <= 1e-5
    # With tiny2 (k=3 of 5, cf 1.0) a 2-token prefill has cap = ceil(2*3*1.0/5) = 2, and
    # no expert can receive more than 2 assignments: provably no drop, prefill == decode.
    m, c = moon("tiny2")
    assert mm.capacity(2, c["k"], c["capacity_factor"], c["n_experts"]) == 2
    for a in range(0, m.vocab, 7):
        pair = [a, (a * 5 + 3) % m.vocab]
        assert rel_err(m.forward(pair), m.decode(pair)) <= 1e-5, pair


def test_moon_capacity_gaps_and_margins():
    m, _ = moon("tiny")
    t = dropping_prompt(m, 30)
    gaps = mm.capacity_gaps(m, t)
    assert gaps, "expected over-capacity experts"
    tr = []
    m.forward(t, trace=tr)
    for g in gaps:
        assert g["load"] > g["cap"] == tr[g["layer"]]["cap"] and g["gap"] >= 0
        # the kept ones of that expert are exactly its `cap` highest gates
        x = tr[g["layer"]]
        sel = x["experts"] == g["expert"]
        kept_g = x["weights"][sel & x["kept"]]
        drop_g = x["weights"][sel & ~x["kept"]]
        assert kept_g.numel() == g["cap"] and float(kept_g.min() - drop_g.max()) == g["gap"]
    r = mm.min_margins(m, [t, t[:8]])
    assert set(r) == {"topk_margin", "topk_margin_capacity", "topk_margin_dropless", "capacity_gap", "dropped"}
    assert r["capacity_gap"] <= min(g["gap"] for g in gaps)          # min over both prompts
    assert 0 < r["topk_margin"] == min(r["topk_margin_capacity"], r["topk_margin_dropless"])
    assert r["dropped"] > 0
    assert mm.min_margins(m, [t[:1]])["capacity_gap"] == math.inf


def test_moon_trace_format():
    m, c = moon("tiny2")
    tr = []
    out = m.forward(toks(9, m.vocab), trace=tr)
    assert len(tr) == c["n_blocks"]
    for i, t in enumerate(tr):
        assert t["layer"] == i
        assert t["hidden"].shape == (9, c["embed_dim"]) and t["hidden"].dtype == torch.float32
        assert t["experts"].shape == (9, c["k"]) and t["experts"].dtype == torch.long
        assert t["weights"].shape == (9, c["k"]) and t["kept"].dtype == torch.bool
    # the last hidden state determines the logits
    x = mm.rms_norm(tr[-1]["hidden"], m.final_norm, m.dims.eps)
    assert torch.allclose(x @ m.emb.t() + m.head_bias, out, atol=1e-5)


def test_moon_rope_fp32_vs_fp64():
    m, c = moon("tiny")
    t = toks(c["ctx_size"], m.vocab)
    a = m.forward(t, dropless=True)
    m64, _ = moon("tiny", rope="fp64")
    assert rel_err(m64.forward(t, dropless=True), a) <= 1e-5


def test_moon_fixture_format():
    d = os.path.join(TMP, "moon_tiny")
    path = mm.write_fixture(d, "tiny", seed=2)
    assert path == os.path.join(d, "model.pt") and zipfile.is_zipfile(path)
    ck = mm.load_checkpoint(path)
    assert list(ck) == ["model", "optimizer", "step", "training_cfg", "model_cfg"], list(ck)
    assert isinstance(ck["step"], int)
    c = mm.make_config("tiny")
    assert list(ck["model_cfg"]) == list(mm.MODEL_CFG_FIELDS) and ck["model_cfg"] == c
    assert all(isinstance(v, (int, float, str, bool)) for v in ck["training_cfg"].values())
    shapes = mm.tensor_shapes(c)
    sd = ck["model"]
    assert list(sd) == ["_orig_mod." + k for k in shapes], "key set / order differs from spec §3"
    for k, (shape, dtype) in shapes.items():
        v = sd["_orig_mod." + k]
        assert tuple(v.shape) == shape and v.dtype == dtype, (k, v.shape, v.dtype)
    assert len(sd) == 4 + c["n_blocks"] * (7 + 2 * c["n_experts"])
    # module-version metadata as nn.Module.state_dict() (of a torch.compile wrapper) writes it
    meta = getattr(sd, "_metadata", None)
    assert meta is not None and "_orig_mod" in meta and "_orig_mod.blocks.0.ffn.experts.5.net.2" in meta
    # optimizer: a real AdamW state_dict after one step, the training script's two groups
    opt = ck["optimizer"]
    assert set(opt) == {"state", "param_groups"} and len(opt["param_groups"]) == 2
    g0, g1 = opt["param_groups"]
    assert g0["weight_decay"] == 1e-2 and g1["weight_decay"] == 0 and tuple(g0["betas"]) == (0.9, 0.95)
    n_unique = len(shapes) - 2 * c["n_blocks"] - 1          # minus buffers and the tied lm_head
    assert sorted(g0["params"] + g1["params"]) == list(range(n_unique))
    assert len(g1["params"]) == 2 * c["n_blocks"] + 2     # norm1/norm2 per block, norm.W, lm_head.bias
    assert len(opt["state"]) == n_unique
    s0 = opt["state"][0]
    assert {"exp_avg", "exp_avg_sq", "step"} <= set(s0) and s0["exp_avg"].shape == shapes["tok_emb.weight"][0]
    # the weights are the seed's values (the optimizer stepped on copies)
    mem = mm.build_state_dict(c, 2)
    assert all(torch.equal(sd["_orig_mod." + k], v) for k, v in mem.items())
    # "it" form: no step
    pi = mm.write_fixture(os.path.join(TMP, "moon_it"), "tiny", seed=2, form="it", optimizer="empty")
    ci = mm.load_checkpoint(pi)
    assert list(ci) == ["model", "optimizer", "training_cfg", "model_cfg"] and ci["optimizer"]["state"] == {}


def test_moon_pickle_weights_only_and_tied_storage():
    path = mm.write_fixture(os.path.join(TMP, "moon_wo"), "tiny2", seed=1)
    # Every global the pickle references is one torch's weights_only loader allows.
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")]
        assert len(pkl) == 1
        data = z.read(pkl[0])
        n_storages = len([n for n in z.namelist() if "/data/" in n])
    globals_seen = set()
    strings = []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("GLOBAL", "INST"):
            globals_seen.add(tuple(arg.split(" ")))
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            globals_seen.add((strings[-2], strings[-1]))
    allowed = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2")}
    storages = {g for g in globals_seen if g[0] == "torch" and g[1].endswith("Storage")}
    assert globals_seen - storages <= allowed, globals_seen
    assert ("torch", "ComplexFloatStorage") in storages and ("torch", "FloatStorage") in storages
    # torch >= 2: weights_only=True loads it. torch 1.13's weights-only unpickler has no
    # BINFLOAT opcode (71 'G'), so any float in the dict (eps, lr) fails there: that case
    # only, and our equally restricted unpickler takes over.
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:          # noqa: BLE001
        assert TORCH_MAJOR < 2 and "71" in str(e), e
        ck = mm.load_checkpoint(path)
    sd = ck["model"]
    emb, head, bias = sd["_orig_mod.tok_emb.weight"], sd["_orig_mod.lm_head.weight"], sd["_orig_mod.lm_head.bias"]
    assert emb is not head and emb.data_ptr() == head.data_ptr()      # two keys, one storage
    assert emb.storage().data_ptr() == head.storage().data_ptr()
    assert bias.storage().data_ptr() != emb.storage().data_ptr()
    # one storage per unique tensor: params + 2 buffers per block + optimizer state tensors
    c = mm.make_config("tiny2")
    n_param = len(mm.tensor_shapes(c)) - 2 * c["n_blocks"] - 1
    assert n_storages == n_param + 2 * c["n_blocks"] + 3 * n_param, n_storages
    assert sd["_orig_mod.blocks.1.mha.freqs_cis"].dtype == torch.complex64
    # the restricted unpickler refuses anything else
    evil = os.path.join(TMP, "evil.pt")
    torch.save({"model": {}, "x": zipfile.ZipFile}, evil)
    try:
        mm.load_checkpoint(evil)
    except Exception as e:          # noqa: BLE001
        assert "ZipFile" in str(e) or "Unsupported" in str(e) or "global" in str(e), e
    else:
        raise AssertionError("a pickle with an arbitrary global was loaded")


def test_moon_buffers_match_recomputation():
    c = mm.make_config("tiny")
    ck = mm.load_checkpoint(mm.write_fixture(os.path.join(TMP, "moon_buf"), c, seed=3, optimizer="empty"))
    fc = ck["model"]["_orig_mod.blocks.2.mha.freqs_cis"]
    hd = c["embed_dim"] // c["n_heads"]
    ang = mm.rope_angles(torch.arange(c["ctx_size"]), hd, c["base"], "fp32")
    assert torch.equal(fc[0, 0].real, torch.cos(ang)) and torch.equal(fc[0, 0].imag, torch.sin(ang))
    assert abs(float(torch.angle(fc[0, 0, 5, 1])) - 5 * c["base"] ** (-2 / hd)) < 1e-6
    mask = ck["model"]["_orig_mod.blocks.0.mha.mask"][0, 0]
    assert mask[3, 3] == 0 and mask[3, 0] == 0 and mask[3, 4] == float("-inf")
    assert int(torch.isinf(mask).sum()) == c["ctx_size"] * (c["ctx_size"] - 1) // 2


def test_moon_from_dir_and_prefixes():
    m, c = moon("tiny2", seed=4)
    t = toks(15, m.vocab)
    ref = m.forward(t)
    for prefix in ("_orig_mod.", "", "module."):
        d = os.path.join(TMP, "moon_pfx_" + (prefix.strip(".") or "none"))
        mm.write_fixture(d, "tiny2", seed=4, prefix=prefix, optimizer="empty")
        keys = mm.load_checkpoint(os.path.join(d, "model.pt"))["model"]
        assert all(k.startswith(prefix) for k in keys)
        got = mm.Model.from_dir(d)
        assert got.vocab == c["vocab_size"] and got.dims.k == 3 and got.dims.eps == 1e-6
        assert torch.equal(got.forward(t), ref), prefix
        assert torch.equal(got.decode(t[:4]), m.decode(t[:4]))
    # a checkpoint named like the published ones, found inside its directory
    d = os.path.join(TMP, "moon_named")
    mm.write_fixture(d, "tiny2", seed=4, filename="it_best.pt", form="it", optimizer="empty")
    assert torch.equal(mm.Model.from_dir(d).forward(t), ref)
    # overrides beat model_cfg; model_cfg values are really used
    ov = mm.Model.from_dir(d, overrides={"capacity_factor": 100.0})
    assert rel_err(ov.forward(t), m.forward(t, dropless=True)) <= 1e-6


def test_moon_untied_head_value_wins():
    # GPTMoE.load_state_dict copies lm_head.weight last into the single tied parameter.
    c = mm.make_config("tiny")
    sd = mm.build_state_dict(c, 1)
    sd["lm_head.weight"] = sd["tok_emb.weight"] * 2
    m = mm.Model(sd, c)
    assert torch.equal(m.emb, sd["lm_head.weight"]) and any("lm_head" in n for n in m.dims.notes)


def test_moon_full_key_list_without_writing():
    c = mm.make_config("full")
    shapes = mm.tensor_shapes(c)
    assert len(shapes) == 156
    # spec §3 table
    assert shapes["tok_emb.weight"] == ((50304, 512), torch.float32)
    assert shapes["blocks.7.mha.freqs_cis"] == ((1, 1, 1024, 32), torch.complex64)
    assert shapes["blocks.0.mha.mask"] == ((1, 1, 1024, 1024), torch.float32)
    assert shapes["blocks.3.mha.QKV.weight"][0] == (1536, 512)
    assert shapes["blocks.3.mha.O.weight"][0] == (512, 512)
    assert shapes["blocks.5.ffn.router.W.weight"][0] == (6, 512)
    assert shapes["blocks.5.ffn.experts.5.net.0.weight"][0] == (2048, 512)
    assert shapes["blocks.5.ffn.experts.5.net.2.weight"][0] == (512, 2048)
    assert shapes["blocks.7.norm2.W"][0] == (512,) and shapes["norm.W"][0] == (512,)
    assert shapes["lm_head.weight"][0] == (50304, 512) and shapes["lm_head.bias"][0] == (50304,)
    # the module tree the writer uses, built on the meta device (nothing allocated),
    # produces exactly these keys, in this order, with these shapes and dtypes
    wrapper, raw = mm.skeleton(c, "_orig_mod.", device="meta")
    sd = wrapper.state_dict()
    assert list(sd) == ["_orig_mod." + k for k in shapes]
    for k, (shape, dtype) in shapes.items():
        assert tuple(sd["_orig_mod." + k].shape) == shape and sd["_orig_mod." + k].dtype == dtype, k
    assert raw.lm_head.weight is raw.tok_emb.weight
    assert sum(p.numel() for p in raw.parameters()) == mm.FULL_PARAMS      # as pretrain.py logs it


def test_moon_param_counts():
    assert mm.param_counts("full") == (134_891_136, 67_782_272)
    for preset in ("tiny", "tiny2"):
        c = mm.make_config(preset)
        sd = mm.build_state_dict(c, 0)
        unique = sum(v.numel() for k, v in sd.items() if not mm.is_buffer(k) and k != "lm_head.weight")
        total, active = mm.param_counts(preset)
        assert total == unique, (preset, total, unique)
        F, D, E, K, L = c["ffn_dim"], c["embed_dim"], c["n_experts"], c["k"], c["n_blocks"]
        assert active == total - L * (E - K) * 2 * F * D
        assert mm.param_counts(mm.Model(sd, c)) == (total, active)
        assert mm.param_counts(c) == (total, active)


# =========================================================================== SlimMoE

def test_half_split_rope_hand_example():
    # hd = 4, theta = 100, position 3: inv_freq = [1, 0.1] -> angles [3, 0.3]; dim j
    # pairs with dim j + 2: (x0, x2) rotates by 3 rad, (x1, x3) by 0.3 rad.
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    a0, a1 = 3.0, 0.3
    expect = torch.tensor([1 * math.cos(a0) - 3 * math.sin(a0), 2 * math.cos(a1) - 4 * math.sin(a1),
                           3 * math.cos(a0) + 1 * math.sin(a0), 4 * math.cos(a1) + 2 * math.sin(a1)])
    for mode in ("fp32", "fp64"):
        ang = sm.rope_angles(torch.tensor([3]), 4, 100.0, mode)
        assert torch.allclose(ang[0].double(), torch.tensor([3.0, 0.3], dtype=torch.float64), atol=1e-6)
        pre = sm.rope_half_split(x.view(1, 4), ang).view(4)
        dec = sm.rope_half_split_complex(x.view(1, 4), ang[0]).view(4)
        assert torch.allclose(pre, expect, atol=1e-6), (pre, expect)
        assert torch.allclose(dec, expect, atol=1e-6), (dec, expect)
    assert torch.equal(sm.rotate_half(x), torch.tensor([-3.0, -4.0, 1.0, 2.0]))
    # and it is NOT the interleaved layout
    inter = mm.rope_interleaved(x.view(1, 1, 4), torch.cos(torch.tensor([[a0, a1]])),
                                torch.sin(torch.tensor([[a0, a1]]))).view(4)
    assert not torch.allclose(inter, expect, atol=1e-3)


def test_slim_forward_equals_decode():
    for preset in ("tiny", "tiny2"):
        m, _ = slim(preset)
        t = toks(40, m.vocab)
        p, d = m.forward(t), m.decode(t)
        assert p.shape == (40, m.vocab) and p.dtype == torch.float32
        e = rel_err(d, p)
        assert e <= 1e-5, f"{preset}: prefill vs decode {e:.3g}"
        assert rel_err(m.forward(t[:6]), p[:6]) <= 1e-5                 # causality


def test_slim_renormalised_routing():
    # hand example: probs [.5, .3, .2] -> top-2 weights [.5, .3] / .8 = [.625, .375]
    h = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    probs, idx, w = sm.route(h, torch.eye(3), 2)
    assert idx.tolist() == [[0, 1]] and torch.allclose(w, torch.tensor([[0.625, 0.375]]), atol=1e-6)
    m, _ = slim("tiny2")
    tr = []
    m.forward(toks(20, m.vocab), trace=tr)
    for t in tr:
        raw = t["probs"].gather(1, t["experts"])
        assert torch.allclose(t["weights"], raw / raw.sum(-1, keepdim=True))
        assert torch.allclose(t["weights"].sum(-1), torch.ones(20), atol=1e-6)
        assert t["hidden"].shape == (20, 72) and t["experts"].shape == (20, 2)
    # and Moonlight does NOT renormalise: the same probabilities give the raw gates
    _, info = mm.moe_prefill(h, torch.eye(3), torch.stack([torch.eye(3)] * 3), torch.stack([torch.eye(3)] * 3),
                             k=2, capacity_factor=10.0)
    assert torch.allclose(info["gate"], torch.tensor([[0.5, 0.3]]), atol=1e-6)


def test_slim_gqa_head_mapping():
    # q head h uses kv head h // G. Zero V of kv head 1 and the o_proj columns of the q
    # heads served by kv head 0: no head contributes, as with o_proj = 0.
    c = sm.make_config("tiny2")
    sd = sm.build_state_dict(c, 0)
    H, Hkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["hidden_size"] // c["num_attention_heads"]
    G = H // Hkv
    a = {k: v.clone() for k, v in sd.items()}
    b = {k: v.clone() for k, v in sd.items()}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn."
        a[p + "v_proj.weight"][hd:2 * hd] = 0
        a[p + "o_proj.weight"][:, 0:G * hd] = 0
        b[p + "o_proj.weight"][:] = 0
    t = toks(12, c["vocab_size"])
    ma, mb = sm.Model(a, c), sm.Model(b, c)
    for fn in ("forward", "decode"):
        assert rel_err(getattr(ma, fn)(t), getattr(mb, fn)(t)) <= 1e-6, fn
    assert rel_err(sm.Model(sd, c).forward(t), mb.forward(t)) > 1e-3


def test_slim_fixture_keys_and_config():
    d = os.path.join(TMP, "slim_tiny")
    files = sm.write_fixture(d, "tiny", seed=3)
    assert sorted(os.path.basename(f) for f in files) == ["config.json", "model.safetensors"]
    header, meta, _, _ = read_safetensors_header(os.path.join(d, "model.safetensors"))
    c = sm.make_config("tiny")
    shapes = sm.tensor_shapes(c)
    assert set(header) == set(shapes) and "lm_head.weight" not in header and meta == {"format": "pt"}
    for k, s in shapes.items():
        assert header[k]["dtype"] == "F32" and tuple(header[k]["shape"]) == s, k
    cfg = json.load(open(os.path.join(d, "config.json")))
    assert cfg["architectures"] == ["SlimMoEForCausalLM"] and cfg["torch_dtype"] == "float32"
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "num_local_experts", "num_experts_per_tok", "rms_norm_eps",
              "rope_theta", "vocab_size", "max_position_embeddings"):
        assert cfg[k] == sm.PRESETS["tiny"][k], k
    assert cfg["tie_word_embeddings"] is True
    m = sm.Model.from_dir(d)
    assert m.dims.rope_theta == 500.0 and m.dims.n_kv_heads == 2 and m.dims.tied and not m.dims.notes
    # full size, from the shape table (no 1.2 GB file written)
    full = sm.tensor_shapes(sm.make_config("full"))
    assert len(full) == 1 + 16 * (4 + 1 + 4 * 3 + 2) + 1 == 306
    assert full["model.embed_tokens.weight"] == (50257, 768)
    assert full["model.layers.15.self_attn.k_proj.weight"] == (256, 768)
    assert full["model.layers.15.self_attn.o_proj.weight"] == (768, 768)
    assert full["model.layers.0.block_sparse_moe.gate.weight"] == (4, 768)
    assert full["model.layers.0.block_sparse_moe.experts.3.w1.weight"] == (1536, 768)
    assert full["model.layers.0.block_sparse_moe.experts.3.w2.weight"] == (768, 1536)
    assert len(sm.tensor_shapes(sm.make_config("full"), "duplicate")) == 307


def test_slim_sharded_roundtrip():
    single = os.path.join(TMP, "slim_single")
    sm.write_fixture(single, "tiny2", seed=5)
    ref = sm.Model.from_dir(single)
    t = toks(17, ref.vocab)
    for n in (2, 3):
        d = os.path.join(TMP, f"slim_sh{n}")
        sm.write_fixture(d, "tiny2", seed=5, shards=n)
        assert not os.path.exists(os.path.join(d, "model.safetensors"))
        idx = json.load(open(os.path.join(d, sm.INDEX_NAME)))
        assert set(idx) == {"metadata", "weight_map"} and list(idx["metadata"]) == ["total_size"]
        names = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
        assert sorted(set(idx["weight_map"].values())) == names
        total = 0
        for f in names:
            hdr, _, _, _ = read_safetensors_header(os.path.join(d, f))
            assert {k for k, v in idx["weight_map"].items() if v == f} == set(hdr)
            total += sum(v["data_offsets"][1] - v["data_offsets"][0] for v in hdr.values())
        assert idx["metadata"]["total_size"] == total
        assert set(idx["weight_map"]) == set(sm.tensor_shapes(sm.make_config("tiny2")))
        got = sm.Model.from_dir(d)
        assert torch.equal(got.forward(t), ref.forward(t)), n
    # an index that disagrees with its shard is an error, not a silent mix-up
    idx_path = os.path.join(TMP, "slim_sh2", sm.INDEX_NAME)
    idx = json.load(open(idx_path))
    k0 = next(iter(idx["weight_map"]))
    idx["weight_map"][k0] = "model-00002-of-00002.safetensors" if idx["weight_map"][k0].startswith("model-00001") \
        else "model-00001-of-00002.safetensors"
    json.dump(idx, open(idx_path, "w"))
    try:
        sm.Model.from_dir(os.path.join(TMP, "slim_sh2"))
    except ValueError as e:
        assert "contrary to the index" in str(e)
    else:
        raise AssertionError("inconsistent index accepted")


def test_slim_half_dtypes():
    ref, _ = slim("tiny")
    t = toks(16, ref.vocab)
    for dt, name in (("F16", "float16"), ("BF16", "bfloat16")):
        d = os.path.join(TMP, "slim_" + dt)
        sm.write_fixture(d, "tiny", seed=1, dtype=dt, shards=2)
        cfg = json.load(open(os.path.join(d, "config.json")))
        assert cfg["torch_dtype"] == name
        for f in os.listdir(d):
            if f.endswith(".safetensors"):
                hdr, _, _, _ = read_safetensors_header(os.path.join(d, f))
                assert all(v["dtype"] == dt for v in hdr.values()), f
        loaded = sm.Model.from_dir(d)
        mem, _ = slim("tiny", dtype=dt)
        assert torch.equal(loaded.forward(t), mem.forward(t)), dt
        assert loaded.emb.dtype == torch.float32
        # the values are the F32 ones rounded to the half type
        raw = sm.read_weights(d)["model.embed_tokens.weight"]
        assert raw.dtype == (torch.float16 if dt == "F16" else torch.bfloat16)
        assert torch.equal(raw.float(), sm.round_to(ref.emb, dt))


def test_slim_tie_variants():
    base = {}
    t = toks(11, 103)
    for tie in ("absent", "duplicate", "untied"):
        d = os.path.join(TMP, "slim_tie_" + tie)
        sm.write_fixture(d, "tiny", seed=2, tie=tie)
        keys = set(read_safetensors(os.path.join(d, "model.safetensors")))
        assert ("lm_head.weight" in keys) == (tie != "absent")
        cfg = json.load(open(os.path.join(d, "config.json")))
        assert cfg["tie_word_embeddings"] == (tie != "untied")
        m = sm.Model.from_dir(d)
        assert m.dims.tied == (tie != "untied")
        base[tie] = m.forward(t)
    assert torch.equal(base["absent"], base["duplicate"])
    assert rel_err(base["untied"], base["absent"]) > 1e-2
    sd = read_safetensors(os.path.join(TMP, "slim_tie_duplicate", "model.safetensors"))
    assert torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"])
    # tie_word_embeddings absent from config: tied iff no lm_head key
    c = sm.make_config("tiny", tie="untied")
    del c["tie_word_embeddings"]
    assert not sm.Model(sm.build_state_dict(sm.make_config("tiny", tie="untied"), 2, "untied"), c).dims.tied


def test_slim_settings_from_config():
    c = sm.make_config("tiny2")
    sd = sm.build_state_dict(c, 0)
    m = sm.Model(sd, c)
    t = toks(20, c["vocab_size"])
    assert (m.dims.rope_theta, m.dims.eps, m.dims.k) == (1e6, 1e-6, 2)
    assert rel_err(sm.Model(sd, c, overrides={"rope_theta": 10.0}).forward(t), m.forward(t)) > 1e-3
    k3 = sm.Model(sd, dict(c, num_experts_per_tok=3))
    assert k3.dims.k == 3 and rel_err(k3.forward(t), m.forward(t)) > 1e-4
    bare = {"num_attention_heads": 6}
    mb = sm.Model(sd, bare)
    assert (mb.dims.rope_theta, mb.dims.eps, mb.dims.k) == (1e6, 1e-5, 2) and len(mb.dims.notes) == 3
    assert mb.dims.n_kv_heads == 2                                   # from k_proj's shape
    try:
        sm.Model(sd, {})
    except ValueError as e:
        assert "num_attention_heads" in str(e)
    else:
        raise AssertionError("missing head count accepted")


def test_slim_param_counts():
    total, active = sm.param_counts("full")
    assert (total, active) == (sm.FULL_PARAMS, sm.FULL_ACTIVE_PARAMS) == (290_330_112, 177_083_904)
    c = sm.make_config("full")
    assert total - c["vocab_size"] * c["hidden_size"] - c["hidden_size"] == sm.FULL_NON_EMBEDDING   # spec §3: 251.7M
    assert sm.param_counts(sm.make_config("full", tie="untied"))[0] == total + 50257 * 768
    for preset in ("tiny", "tiny2"):
        for tie in ("absent", "untied"):
            c = sm.make_config(preset, tie=tie)
            n = sum(int(np.prod(s)) for s in sm.tensor_shapes(c, tie).values())
            assert sm.param_counts(c)[0] == n, (preset, tie)
        m, c = slim(preset)
        assert sm.param_counts(m) == sm.param_counts(c)


# =========================================================================== both families

def test_common_interface_and_determinism():
    for mod in (mm, sm):
        assert {"tiny", "tiny2", "full"} <= set(mod.PRESETS)
        sig = inspect.signature(mod.write_fixture)
        assert list(sig.parameters)[:3] == ["out_dir", "preset", "seed"]
        assert sig.parameters["preset"].default == "tiny" and sig.parameters["seed"].default == 1
        assert callable(mod.Model.from_dir) and callable(mod.param_counts) and callable(mod.min_margins)
    # same seed -> byte-identical files; another seed -> different weights
    a, b, c = (os.path.join(TMP, f"det_{x}") for x in "abc")
    for d, seed in ((a, 7), (b, 7), (c, 8)):
        mm.write_fixture(d, "tiny", seed=seed)
        sm.write_fixture(d, "tiny", seed=seed)
    for f in ("model.pt", "model.safetensors", "config.json"):
        assert open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read(), f
        if f != "config.json":
            assert open(os.path.join(a, f), "rb").read() != open(os.path.join(c, f), "rb").read(), f
    for mod in (mm, sm):
        m = mod.Model.from_dir(a)
        assert m.vocab == mod.PRESETS["tiny"]["vocab_size"]
        assert "topk_margin" in mod.min_margins(m, [[1, 2, 3]])
        try:
            m.forward([m.vocab])
        except ValueError as e:
            assert "out of range" in str(e)
        else:
            raise AssertionError("out-of-range token accepted")


def test_repeat_penalty_forms():
    # Hand examples: once per distinct token of the window; sign-aware divides a
    # positive logit and multiplies a negative one; divide-by-count divides by
    # p ** (occurrences in the window), whatever the sign.
    logits = torch.tensor([2.0, -2.0, 3.0, 1.0])
    history = [0, 1, 1, 2, 0, 1]
    got = families.repeat_penalty(logits, history, ("sign_aware", 2.0, -1))
    assert got.tolist() == [1.0, -4.0, 1.5, 1.0], got
    got = families.repeat_penalty(logits, history, ("divide_by_count", 2.0, 3))
    assert got.tolist() == [1.0, -1.0, 1.5, 1.0], got    # window [2, 0, 1]
    got = families.repeat_penalty(logits, history, ("divide_by_count", 2.0, -1))
    assert got.tolist() == [0.5, -0.25, 1.5, 1.0], got
    assert families.repeat_penalty(logits, history, None) is logits


def test_greedy_reply():
    # Without a penalty: Moonlight's own generate (one prefill with the capacity rule,
    # then cached decode) and SlimMoE's greedy over fresh prefills.
    m, _ = moon("tiny", 3)
    t = dropping_prompt(m, 12)
    assert families.greedy_reply(m, t, 6).ids == m.generate(t, 6)
    assert families.greedy_reply(m, t, 6, dropless=True).ids == \
        families.greedy(m, t, 6, dropless=True)
    s, _ = slim("tiny")
    reply = families.greedy_reply(s, [5, 6, 7], 8)
    assert reply.ids == families.greedy(s, [5, 6, 7], 8) and not reply.stopped
    assert 0 < reply.gap < math.inf
    # A stop token ends the reply before it; a penalty changes the choices.
    k = next(i for i in range(1, 8) if reply.ids[i] not in reply.ids[:i])
    stopped = families.greedy_reply(s, [5, 6, 7], 8, stops={reply.ids[k]})
    assert stopped.ids == reply.ids[:k] and stopped.stopped, (reply, stopped)
    penalised = families.greedy_reply(s, [5, 6, 7], 8, penalty=("sign_aware", 50.0, -1))
    assert not set(penalised.ids) & {5, 6, 7} and len(set(penalised.ids)) == 8, penalised


def test_fixture_tokenizers():
    # Every writer's file is JSON / ranks that cover the bytes, and its decoder gives
    # the pieces' bytes; special ids print nothing.
    d = os.path.join(TMP, "tokenizers")
    os.makedirs(d, exist_ok=True)
    dec = fixture_tokenizers.byte_level(d, specials=["<|endoftext|>", "<|padding|>"],
                                        specials_first=True)
    tok = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    assert tok["model"]["vocab"]["<|endoftext|>"] == 0 and dec.special == {0, 1}
    assert 200 <= len(tok["model"]["merges"]) <= 300 and dec.size == len(tok["model"]["vocab"])
    the = tok["model"]["vocab"]["\u0120the"]   # GPT-2's stand-in for a space, then "the"
    assert dec.decode([0, the, 1, the]) == " the the"
    dec = fixture_tokenizers.byte_level(d)
    assert dec.special == {dec.size - 1}
    dec = fixture_tokenizers.tiktoken(d)
    ranks = open(os.path.join(d, "gpt2.tiktoken")).read().split("\n")
    assert len(ranks) - 1 == len(dec.pieces) - 4 and dec.size == 50260
    assert dec.decode([50257, 50258, 50256]) == ""
    dec = fixture_tokenizers.byte_fallback(d)
    tok = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    assert [tok["model"]["vocab"][s] for s in fixture_tokenizers.SSMOELM_SPECIALS] == \
        list(range(7))
    byte = tok["model"]["vocab"]
    ids = [byte["\u2581the"], byte["<0xC3>"], byte["<0xBC>"]]
    assert dec.decode(ids) == " the\u00fc" and dec.decode(ids, at_start=True) == "the\u00fc"


# =========================================================================== slow (--slow)

def slow_moon_full_fixture():
    d = os.path.join(TMP, "moon_full")
    path = mm.write_fixture(d, "full", seed=1)
    size = os.path.getsize(path)
    ck = mm.load_checkpoint(path)
    assert len(ck["model"]) == 156 and ck["optimizer"]["state"] == {}
    assert 0.5e9 < size < 0.7e9, size
    m = mm.Model(ck["model"], ck["model_cfg"])
    assert mm.param_counts(m) == (134_891_136, 67_782_272)
    t = [50256, 50257, 1000, 50258, 42, 50259]
    assert rel_err(m.forward(t, dropless=True), m.decode(t)) <= 1e-5


def slow_slim_full_fixture():
    d = os.path.join(TMP, "slim_full")
    sm.write_fixture(d, "full", seed=1, shards=2)
    m = sm.Model.from_dir(d)
    assert sm.param_counts(m) == (sm.FULL_PARAMS, sm.FULL_ACTIVE_PARAMS)
    t = [50256, 1000, 42, 7]
    assert rel_err(m.forward(t), m.decode(t)) <= 1e-5


if __name__ == "__main__":
    sys.exit(run_tests(globals(), sys.argv[1:], TMP))
