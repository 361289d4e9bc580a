#!/usr/bin/python3
"""Self-test of the SSMoELM reference and packed fixture writer (ssmoelm_model.py).

    /usr/bin/python3 test/reference/test_ssmoelm_reference.py [-k SUBSTRING] [-v] [--keep]

No pytest needed: every `test_*` function below is run, the last line printed is
"N passed, M failed" and the exit code is 0 only if nothing failed.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import families  # noqa: E402
import ssmoelm_model as sm  # noqa: E402
from safetensors_io import read_safetensors, read_safetensors_header, write_safetensors  # noqa: E402
from selftest import rel_err, run, run_tests  # noqa: E402

PY = "/usr/bin/python3"
TMP = tempfile.mkdtemp(prefix="moec_ssmoelm_test_")
TOKS_TINY = [3, 17, 42, 95, 0, 5, 5, 64, 23, 81, 12, 7, 55, 31, 90, 2]
TOKS_TINY2 = [1, 76, 30, 4, 4, 50, 12, 66, 9, 41, 0, 23, 70]
PACKINGS = [dict(zip(("bit_order", "nibble_order", "int4_code"), combo)) for combo in
            itertools.product(("msb_first", "lsb_first"), ("low_first", "high_first"),
                              ("twos_complement", "offset8"))]

_FIXTURES = {}


def fixture(preset="tiny", seed=1, **opts) -> str:
    key = (preset, seed, tuple(sorted(opts.items())))
    if key not in _FIXTURES:
        d = os.path.join(TMP, f"fx{len(_FIXTURES)}_{preset}")
        sm.write_fixture(d, preset, seed, **opts)
        _FIXTURES[key] = d
    return _FIXTURES[key]


def weights_of(d: str, **packing):
    """Dequantized logical weights of fixture dir d (packing from config.json unless given)."""
    cfg = json.load(open(os.path.join(d, "config.json")))
    tensors = read_safetensors(os.path.join(d, "model.safetensors"))
    return sm.dequantize_tensors(tensors, dict(cfg.get("packing", {}), **packing),
                                 sm.detect_prefix(tensors))[0]


# --------------------------------------------------------------------------- prefill vs decode

def test_forward_equals_decode():
    for preset, toks in (("tiny", TOKS_TINY), ("tiny2", TOKS_TINY2)):
        m = sm.Model.from_dir(fixture(preset, seed=2))
        for t in (toks, toks[:1], toks[:3], list(reversed(toks))):
            a, b = m.forward(t), m.decode(t)
            assert a.shape == (len(t), m.vocab) and a.dtype == torch.float32
            assert torch.isfinite(a).all()
            e = rel_err(b, a)
            assert e <= 1e-5, f"{preset} T={len(t)}: forward vs decode rel err {e:.3g}"


def test_forward_logits_not_degenerate():
    m = sm.Model.from_dir(fixture("tiny"))
    lg = m.forward(TOKS_TINY)
    assert 0.3 < float(lg.std()) < 20
    assert len(set(lg.argmax(-1).tolist())) > 3


# --------------------------------------------------------------------------- packing by hand

# 1-bit [2, 8]: rows (1,0,1,1,0,0,0,1) and (0,1,1,1,1,1,1,0), scales 0.5 and 2
BIN_2x8 = {"msb_first": [0xB1, 0x7E], "lsb_first": [0x8D, 0x7E]}
W_BIN_2x8 = [[.5, -.5, .5, .5, -.5, -.5, -.5, .5], [-2, 2, 2, 2, 2, 2, 2, -2]]
# 1-bit [2, 5]: flat bits 11001 01011 -- row 1 starts at bit 5 of byte 0; 6 padding bits
BIN_2x5 = {"msb_first": [0xCA, 0xC0], "lsb_first": [0x53, 0x03]}
W_BIN_2x5 = [[1.5, 1.5, -1.5, -1.5, 1.5], [-.25, .25, -.25, .25, .25]]
# int4 [2, 4]: q = (1, -2, 7, -7) and (0, 3, -1, 5), scales 0.25 and 3
INT4_2x4 = {("low_first", "twos_complement"): [0xE1, 0x97, 0x30, 0x5F],
            ("high_first", "twos_complement"): [0x1E, 0x79, 0x03, 0xF5],
            ("low_first", "offset8"): [0x69, 0x1F, 0xB8, 0xD7],
            ("high_first", "offset8"): [0x96, 0xF1, 0x8B, 0x7D]}
W_INT4_2x4 = [[.25, -.5, 1.75, -1.75], [0, 9, -3, 15]]
# int4 [1, 3]: q = (-8, 7, 2), scale 1; odd count: the 4th nibble is padding (code of 0)
INT4_1x3 = {("low_first", "twos_complement"): [0x78, 0x02],
            ("high_first", "twos_complement"): [0x87, 0x20],
            ("low_first", "offset8"): [0xF0, 0x8A],
            ("high_first", "offset8"): [0x0F, 0xA8]}
W_INT4_1x3 = [[-8, 7, 2]]


def _entries(name, rows, cols, kind, codes, scales):
    return {name + "__scale": np.array(scales, dtype=np.float16),
            name + kind: np.array(codes, dtype=np.uint8),
            name + "__shape": np.array([rows, cols], dtype=np.int32),
            name + "__cols": np.array([cols], dtype=np.int32)}


def test_hand_packing_examples_every_option():
    for i, p in enumerate(PACKINGS):
        ni = (p["nibble_order"], p["int4_code"])
        tensors = {}
        tensors.update(_entries("a", 2, 8, "__bin", BIN_2x8[p["bit_order"]], [0.5, 2.0]))
        pad = list(BIN_2x5[p["bit_order"]])
        pad[1] |= 0x3F if p["bit_order"] == "msb_first" else 0xFC      # padding bits are never read
        tensors.update(_entries("b", 2, 5, "__bin", pad, [1.5, 0.25]))
        tensors.update(_entries("c", 2, 4, "__int4", INT4_2x4[ni], [0.25, 3.0]))
        tensors.update(_entries("d", 1, 3, "__int4", INT4_1x3[ni], [1.0]))
        tensors["n"] = np.array([1.0, 0.099975586], dtype=np.float16)  # a plain F16 tensor
        # through a real file: U8 / I32 / F16 entries round-trip through safetensors_io
        path = os.path.join(TMP, f"hand{i}.safetensors")
        write_safetensors(path, tensors, metadata={"format": "pt"})
        header, _, _, _ = read_safetensors_header(path)
        assert header["a__bin"]["dtype"] == "U8" and header["a__shape"]["dtype"] == "I32"
        assert header["a__scale"]["dtype"] == "F16" and header["b__bin"]["shape"] == [2]
        w, storage = sm.dequantize_tensors(read_safetensors(path), p)
        assert storage == {"a": "bin", "b": "bin", "c": "int4", "d": "int4", "n": "f16"}
        for name, want in (("a", W_BIN_2x8), ("b", W_BIN_2x5), ("c", W_INT4_2x4), ("d", W_INT4_1x3)):
            assert w[name].dtype == torch.float32
            assert torch.equal(w[name], torch.tensor(want, dtype=torch.float32)), (p, name, w[name])
        assert torch.equal(w["n"], torch.tensor([1.0, np.float32(np.float16(0.099975586))]))
        # the writer's packers produce the hand bytes (padding: zero bits, the code of 0)
        bits_a = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 0])
        assert sm.pack_sign1(bits_a, p["bit_order"]).tolist() == BIN_2x8[p["bit_order"]]
        bits_b = np.array([1, 1, 0, 0, 1, 0, 1, 0, 1, 1])
        assert sm.pack_sign1(bits_b, p["bit_order"]).tolist() == BIN_2x5[p["bit_order"]]
        assert sm.pack_int4(np.array([1, -2, 7, -7, 0, 3, -1, 5]), *ni).tolist() == INT4_2x4[ni]
        assert sm.pack_int4(np.array([-8, 7, 2]), *ni).tolist() == INT4_1x3[ni]


def test_quantizers():
    w = np.array([[0.3, -0.1, 0.0, -0.6], [1.0, 2.0, -3.5, 0.5], [0, 0, 0, 0]], dtype=np.float32)
    s, bits = sm.quantize_sign1(w)
    assert s.dtype == np.float16 and s.tolist() == [np.float16(0.25), np.float16(1.75), 0.0]
    assert bits.tolist() == [1, 0, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1]              # w >= 0 -> 1
    s, q = sm.quantize_int4(w)
    assert s.dtype == np.float16 and s[1] == np.float16(0.5) and s[2] == 0
    assert q.tolist()[4:] == [2, 4, -7, 1, 0, 0, 0, 0]                         # 0.5/0.5 = 1
    assert q.tolist()[:4] == np.clip(np.rint(w[0] / np.float32(s[0])), -7, 7).astype(int).tolist()


def test_dequantized_fixture_matches_master_weights():
    """The file's codes are the quantisation of the master weights: 1-bit rows are
    +-mean|W_row| with W's signs; int4 rows are within half a step of W with |q| <= 7
    and max |q| = 7."""
    c = sm.preset_config("tiny2")
    w = weights_of(fixture("tiny2"))
    specs = sm.tensor_specs(c)
    for name, (shape, storage) in specs.items():
        master = sm.master_weight(name, shape, c, 1)
        got = w[name].numpy()
        if storage == "f16":
            assert np.array_equal(got, master.astype(np.float16).astype(np.float32)), name
            continue
        if storage == "bin":
            scale = np.abs(master).mean(axis=1).astype(np.float16).astype(np.float32)
            assert np.array_equal(got, np.where(master >= 0, 1, -1) * scale[:, None]), name
        else:
            scale = (np.abs(master).max(axis=1) / 7).astype(np.float16).astype(np.float32)
            q = got / scale[:, None]
            assert np.array_equal(q, np.rint(q)) and np.abs(q).max() <= 7, name
            assert (np.abs(q).max(axis=1) == 7).all(), name
            assert (np.abs(got - master) <= scale[:, None] * 0.5 + 1e-6).all(), name


# --------------------------------------------------------------------------- packing options

def test_non_default_packing_reads_back_same_weights():
    base_dir = fixture("tiny2", seed=3)
    base = weights_of(base_dir)
    base_logits = sm.Model.from_dir(base_dir).forward(TOKS_TINY2)
    base_h = read_safetensors(os.path.join(base_dir, "model.safetensors"))
    for p in PACKINGS[1:]:
        d = fixture("tiny2", seed=3, **p)
        cfg = json.load(open(os.path.join(d, "config.json")))
        assert cfg["packing"] == p
        got = weights_of(d)
        assert set(got) == set(base)
        for k in base:
            assert torch.equal(got[k], base[k]), (p, k)
        assert torch.equal(sm.Model.from_dir(d).forward(TOKS_TINY2), base_logits)
        # the bytes do differ where the option applies
        h = read_safetensors(os.path.join(d, "model.safetensors"))
        key_bin = "model.layers.0.mlp.experts.0.up_proj.weight__bin"
        key_int4 = "model.layers.0.self_attn.q_proj.weight__int4"
        assert torch.equal(h[key_bin], base_h[key_bin]) == (p["bit_order"] == "msb_first")
        assert torch.equal(h[key_int4], base_h[key_int4]) == (
            p["nibble_order"] == "low_first" and p["int4_code"] == "twos_complement")
    # explicit options override config.json; without the "packing" block they are needed
    d = fixture("tiny2", seed=3, **PACKINGS[-1])
    bare = os.path.join(TMP, "bare_packing")
    shutil.copytree(d, bare)
    cfg = json.load(open(os.path.join(bare, "config.json")))
    del cfg["packing"]
    json.dump(cfg, open(os.path.join(bare, "config.json"), "w"))
    wrong = sm.Model.from_dir(bare)                                   # defaults: wrong here
    assert float((wrong.forward(TOKS_TINY2) - base_logits).abs().max()) > 1e-2
    right = sm.Model.from_dir(bare, **PACKINGS[-1])
    assert right.packing == PACKINGS[-1]
    assert torch.equal(right.forward(TOKS_TINY2), base_logits)
    assert float((sm.Model.from_dir(d, bit_order="msb_first").forward(TOKS_TINY2)
                  - base_logits).abs().max()) > 1e-2


def test_bad_packing_option():
    for kw in ({"bit_order": "big"}, {"nibble_order": "low"}, {"int4_code": "offset7"}):
        try:
            sm.write_fixture(os.path.join(TMP, "badopt"), "tiny", 1, **kw)
        except ValueError as e:
            assert list(kw)[0] in str(e)
        else:
            raise AssertionError(kw)


# --------------------------------------------------------------------------- sizes and counts

def test_full_param_counts_without_allocating():
    assert sm.param_counts("full") == (47_036_160, 25_802_496) == (sm.FULL_PARAMS, sm.FULL_ACTIVE_PARAMS)
    c = sm.preset_config("full")
    specs = sm.tensor_specs(c)
    n = sum(int(np.prod(s)) for s, _ in specs.values())
    assert n == 47_036_160
    routed = sum(int(np.prod(s)) for k, (s, _) in specs.items() if ".mlp.experts." in k)
    assert n - routed * (8 - 2) // 8 == 25_802_496
    # the card's bit widths: packed bytes + fp16 scales/router/norms ~ "12.1 MB packed"
    nbytes = sum((int(np.prod(s)) + 7) // 8 if st == "bin" else (int(np.prod(s)) + 1) // 2 if st == "int4"
                 else 2 * int(np.prod(s)) for s, st in specs.values())
    nbytes += sum(2 * s[0] for s, st in specs.values() if st != "f16")
    assert 12.0e6 < nbytes < 12.2e6, nbytes
    for preset in ("tiny", "tiny2"):
        c = sm.preset_config(preset)
        total, active = sm.param_counts(preset)
        assert total == sum(int(np.prod(s)) for s, _ in sm.tensor_specs(c).values())
        assert active == total - c["n_layers"] * (c["n_experts"] - c["top_k"]) * 3 * c["d_ff"] * c["d_model"]
        assert sm.param_counts(sm.Model.from_dir(fixture(preset))) == (total, active)


def test_tiny_presets_whole_bytes():
    odd_cols = []
    for preset in ("tiny", "tiny2"):
        for name, (shape, storage) in sm.tensor_specs(sm.preset_config(preset)).items():
            if storage != "f16":
                assert (shape[0] * shape[1]) % 8 == 0, (preset, name, shape)
                if shape[1] % 8:
                    odd_cols.append((preset, name, shape, storage))
    assert any(s == "bin" for *_, s in odd_cols) and any(s == "int4" for *_, s in odd_cols)
    assert ("tiny2", "model.layers.1.mlp.experts.0.down_proj.weight", (48, 36), "bin") in odd_cols


def spec_names(V, d, L, H, Hkv, hd, E, F):
    """Expected file entries -> (dtype, shape), written out independently of tensor_specs."""
    out = {}

    def packed(k, rows, cols, bits):
        out[k + "__scale"] = ("F16", [rows])
        out[k + ("__bin" if bits == 1 else "__int4")] = ("U8", [-(-rows * cols * bits // 8)])
        out[k + "__shape"] = ("I32", [2])
        out[k + "__cols"] = ("I32", [1])

    packed("model.embed_tokens.weight", V, d, 4)
    for i in range(L):
        p = f"model.layers.{i}."
        vo = 4 if i in (0, L - 1) else 1
        out[p + "input_layernorm.weight"] = ("F16", [d])
        out[p + "post_attention_layernorm.weight"] = ("F16", [d])
        out[p + "mlp.router.weight"] = ("F16", [E, d])
        packed(p + "self_attn.q_proj.weight", H * hd, d, 4)
        packed(p + "self_attn.k_proj.weight", Hkv * hd, d, 4)
        packed(p + "self_attn.v_proj.weight", Hkv * hd, d, vo)
        packed(p + "self_attn.o_proj.weight", d, H * hd, vo)
        for e in range(E):
            packed(p + f"mlp.experts.{e}.gate_proj.weight", F, d, 1)
            packed(p + f"mlp.experts.{e}.up_proj.weight", F, d, 1)
            packed(p + f"mlp.experts.{e}.down_proj.weight", d, F, 1)
        packed(p + "mlp.shared_expert.gate_proj.weight", F, d, 4)
        packed(p + "mlp.shared_expert.up_proj.weight", F, d, 4)
        packed(p + "mlp.shared_expert.down_proj.weight", d, F, 4)
    out["model.norm.weight"] = ("F16", [d])
    return out


def test_fixture_header_and_files():
    d = fixture("tiny")
    header, meta, _, _ = read_safetensors_header(os.path.join(d, "model.safetensors"))
    want = spec_names(96, 64, 3, 4, 2, 16, 6, 40)
    assert {k: (v["dtype"], v["shape"]) for k, v in header.items()} == want
    assert meta["format"] == "pt" and json.loads(meta["bits_config"])["v_proj"] == [4, 1, 4]
    t = read_safetensors(os.path.join(d, "model.safetensors"))
    assert t["model.layers.1.self_attn.o_proj.weight__shape"].tolist() == [64, 64]
    assert t["model.layers.0.mlp.experts.5.down_proj.weight__shape"].tolist() == [64, 40]
    assert t["model.layers.0.mlp.experts.5.down_proj.weight__cols"].tolist() == [40]
    m = sm.Model.from_dir(d)
    assert m.storage["model.layers.1.self_attn.v_proj.weight"] == "bin"
    assert m.storage["model.layers.2.self_attn.v_proj.weight"] == "int4"
    assert m.storage["model.layers.0.mlp.router.weight"] == "f16"
    cfg = json.load(open(os.path.join(d, "config.json")))
    for k, v in dict(vocab_size=96, d_model=64, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=16,
                     n_experts=6, top_k=2, d_ff=40, rope_theta=10000.0, norm_eps=1e-5,
                     max_seq_len=2048).items():
        assert cfg[k] == v and m.cfg[k] == v, k
    assert cfg["packing"] == sm.DEFAULT_PACKING
    tok = json.load(open(os.path.join(d, "tokenizer_config.json")))
    assert tok["bos_token"] == "<bos>" and tok["eos_token"] == "<eos>"
    h2, _, _, _ = read_safetensors_header(os.path.join(fixture("tiny2"), "model.safetensors"))
    assert {k: (v["dtype"], v["shape"]) for k, v in h2.items()} == spec_names(77, 48, 3, 4, 1, 12, 5, 36)


def test_prefix_option():
    d = fixture("tiny", prefix="_orig_mod.")
    header, _, _, _ = read_safetensors_header(os.path.join(d, "model.safetensors"))
    assert all(k.startswith("_orig_mod.model.") for k in header)
    m = sm.Model.from_dir(d)
    assert m.prefix == "_orig_mod."
    assert torch.equal(m.forward(TOKS_TINY), sm.Model.from_dir(fixture("tiny")).forward(TOKS_TINY))


def test_fixture_deterministic_and_streamed():
    a = fixture("tiny2", seed=9)
    b = os.path.join(TMP, "again")
    sm.write_fixture(b, "tiny2", 9)
    assert open(os.path.join(a, "model.safetensors"), "rb").read() == \
        open(os.path.join(b, "model.safetensors"), "rb").read()
    c = weights_of(fixture("tiny2", seed=10))
    assert not torch.equal(weights_of(a)["model.embed_tokens.weight"], c["model.embed_tokens.weight"])


# --------------------------------------------------------------------------- math by hand

def test_rope_and_inv_freq():
    f = sm.inv_freq(64)
    exact = torch.tensor([10000.0 ** (-2 * j / 64) for j in range(32)], dtype=torch.float64)
    assert f.dtype == torch.float32 and torch.equal(f, exact.float())
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])                   # [T=1, H=1, hd=4]
    ang = sm.rope_angles(torch.tensor([1]), torch.tensor([1.0, 0.5]))
    c1, s1, c2, s2 = math.cos(1), math.sin(1), math.cos(0.5), math.sin(0.5)
    want = torch.tensor([1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2])
    assert torch.allclose(sm.rope_half_split(x, ang)[0, 0], want, atol=1e-6)
    assert torch.allclose(sm.rope_half_split_complex(x[0], ang[0])[0], want, atol=1e-6)
    assert torch.equal(sm.rope_half_split(x, sm.rope_angles(torch.tensor([0]), torch.tensor([1.0, 0.5]))), x)
    # angles: float32 position times float32 inv_freq, in float32
    a = sm.rope_angles(torch.tensor([2047]), f)
    assert a.dtype == torch.float32 and torch.equal(a[0], torch.tensor(2047.0) * f)


def test_rms_norm_eps():
    x = torch.tensor([[3.0, 4.0]])
    r = 1 / math.sqrt((9 + 16) / 2 + 1e-5)
    assert torch.allclose(sm.rms_norm(x, torch.tensor([1.0, 2.0])), torch.tensor([[3 * r, 8 * r]]), atol=1e-7)
    assert sm.NORM_EPS == 1e-5 and sm.ROPE_THETA == 10000.0


def test_moe_layer_by_hand_with_shared_expert():
    """Layer 0 with the attention output zeroed: hidden = x + sum_k w_k Expert(h2) +
    Shared(h2), softmax over all experts, top-2 renormalised, shared weight 1."""
    m = sm.Model.from_dir(fixture("tiny"))
    lw = m.layers[0]
    lw.wo = torch.zeros_like(lw.wo)
    tr = []
    m.forward(TOKS_TINY, trace=tr)
    x = m.emb[torch.tensor(TOKS_TINY)]
    h2 = sm.rms_norm(x, lw.ln2)
    p = torch.softmax(h2 @ lw.router.T, dim=-1)

    def ffn(gate, up, down, z):
        return torch.nn.functional.silu(z @ gate.T) * (z @ up.T) @ down.T

    for variant in ("right", "no_shared", "no_renorm", "gate_up_swapped"):
        want = x.clone()
        for t in range(len(TOKS_TINY)):
            z = h2[t:t + 1]
            top = sorted(range(6), key=lambda e: -float(p[t, e]))[:2]
            ws = p[t, top] if variant == "no_renorm" else p[t, top] / p[t, top].sum()
            for wk, e in zip(ws, top):
                g, u = (lw.up[e], lw.gate[e]) if variant == "gate_up_swapped" else (lw.gate[e], lw.up[e])
                want[t] += wk * ffn(g, u, lw.down[e], z)[0]
            if variant != "no_shared":
                want[t] += ffn(lw.s_gate, lw.s_up, lw.s_down, z)[0]
        diff = float((tr[0]["hidden"] - want).abs().max())
        assert (diff < 1e-5) == (variant == "right"), (variant, diff)
    assert torch.allclose(tr[0]["weights"].sum(-1), torch.ones(len(TOKS_TINY)), atol=1e-6)
    assert bool((tr[0]["experts"][:, 0] != tr[0]["experts"][:, 1]).all())


def test_gqa_head_mapping():
    """kv head g serves q heads g*G .. g*G+G-1: with V of kv head 0 zeroed and O's
    columns of q heads G.. zeroed, attention adds exactly nothing (tiny: 4 q, 2 kv)."""
    d = fixture("tiny")
    hd, G = 16, 2

    def hidden(edit):
        m = sm.Model.from_dir(d)
        for lw in m.layers:
            edit(lw)
        tr = []
        m.forward(TOKS_TINY, trace=tr)
        return tr[-1]["hidden"]

    def cancel(lw, keep_cols):
        lw.wv = lw.wv.clone()
        lw.wv[:hd] = 0
        lw.wo = lw.wo.clone()
        lw.wo[:, keep_cols] = 0

    none = hidden(lambda lw: setattr(lw, "wo", torch.zeros_like(lw.wo)))
    good = hidden(lambda lw: cancel(lw, slice(G * hd, None)))
    wrong = hidden(lambda lw: cancel(lw, slice(0, G * hd)))
    assert float((good - none).abs().max()) < 1e-5
    assert float((wrong - none).abs().max()) > 1e-3


# --------------------------------------------------------------------------- margins, families

def test_min_margins_and_families():
    m = sm.Model.from_dir(fixture("tiny"))
    r = sm.min_margins(m, [TOKS_TINY, TOKS_TINY[:5]])
    assert 0 < r["topk_margin"] < 1 and r["total"] == (16 + 5) * 3
    tr = []
    m.forward(TOKS_TINY, trace=tr)
    gaps = [float((s[:, 1] - s[:, 2]).min()) for s in
            (torch.sort(t["probs"], dim=-1, descending=True).values for t in tr)]
    assert abs(sm.min_margins(m, [TOKS_TINY])["topk_margin"] - min(gaps)) < 1e-9
    try:
        sm.write_fixture(os.path.join(TMP, "nomargin"), "tiny", 1, check_tokens=[TOKS_TINY[:4]], margin_min=2.0)
    except ValueError as e:
        assert "margin" in str(e)
    else:
        raise AssertionError("expected ValueError")
    fam = families.get("ssmoelm")
    prompts = families.parse_prompts("1,2,3,4,5,6,7/9/42,0,42,0,17,33,2,2,2,71,11")
    out = os.path.join(TMP, "family")
    seed = fam.write_checked_fixture(out, "tiny2", 1, prompts, {"bit_order": "lsb_first"})
    ref = fam.load(out)
    assert sm.min_margins(ref, prompts)["topk_margin"] >= families.MARGIN
    assert ref.packing["bit_order"] == "lsb_first" and seed >= 1
    assert len(families.greedy(ref, prompts[0], 3)) == 3


# --------------------------------------------------------------------------- errors, CLI

def test_loader_errors():
    d = fixture("tiny")
    t = read_safetensors(os.path.join(d, "model.safetensors"))
    cfg = json.load(open(os.path.join(d, "config.json")))
    m = sm.Model(t, cfg)
    for bad in ([96], [-1], []):
        try:
            m.forward(bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"tokens {bad} accepted")
    k = "model.layers.1.self_attn.v_proj.weight"
    cases = [
        (lambda s: s.pop(k + "__scale"), {}, "__scale"),
        (lambda s: s.__setitem__(k + "__bin", s[k + "__bin"][:-1]), {}, "U8"),
        (lambda s: s.__setitem__(k + "__int4", torch.zeros(1, dtype=torch.uint8)), {}, "exactly one"),
        (lambda s: s.__setitem__(k + "__cols", torch.tensor([31], dtype=torch.int32)), {}, "__cols"),
        (lambda s: s.__setitem__(k + "__shape", torch.tensor([33, 64], dtype=torch.int32)), {}, "__scale"),
        (lambda s: s.pop("model.layers.2.mlp.router.weight"), {}, "missing"),
        (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), {}, "unexpected"),
        (lambda s: None, {"d_ff": 41}, "d_ff"),
        (lambda s: None, {"n_heads": 3}, "q_proj"),
    ]
    for mutate, cfg_change, msg in cases:
        s2 = dict(t)
        mutate(s2)
        try:
            sm.Model(s2, dict(cfg, **cfg_change))
        except ValueError as e:
            assert msg in str(e), (msg, str(e))
        else:
            raise AssertionError(msg)


def test_cli_fixture_logits_counts():
    me = os.path.join(_HERE, "ssmoelm_model.py")
    d = os.path.join(TMP, "cli")
    r = run([PY, me, "fixture", "--out", d, "--preset", "tiny2", "--seed", "3", "--nibble-order", "high_first",
             "--int4-code", "offset8", "--check-tokens", ",".join(map(str, TOKS_TINY2))])
    assert r.returncode == 0, r.stderr
    seed = int(r.stdout.split()[1])
    ref = sm.Model.from_dir(fixture("tiny2", seed=seed)).forward(TOKS_TINY2)
    out = os.path.join(TMP, "cli.f32")
    toks = ",".join(map(str, TOKS_TINY2))
    for extra in ([], ["--decode"], ["--nibble-order", "high_first", "--int4-code", "offset8"]):
        r = run([PY, me, "logits", "--model", d, "--tokens", toks, "--out", out] + extra)
        assert r.returncode == 0, r.stderr
        got = torch.from_numpy(np.fromfile(out, dtype="<f4").reshape(len(TOKS_TINY2), 77))
        assert rel_err(got, ref) < 1e-5, extra
    r = run([PY, me, "logits", "--model", d, "--tokens", toks, "--out", out, "--int4-code", "twos_complement"])
    got = torch.from_numpy(np.fromfile(out, dtype="<f4").reshape(len(TOKS_TINY2), 77))
    assert r.returncode == 0 and rel_err(got, ref) > 1e-3           # the override is honoured
    r = run([PY, me, "logits", "--model", d, "--tokens", "5,77", "--out", out])
    assert r.returncode == 2 and "out of range" in r.stderr
    r = run([PY, me, "counts", "--preset", "full"])
    assert r.stdout.split() == ["47036160", "25802496"]


if __name__ == "__main__":
    sys.exit(run_tests(globals(), sys.argv[1:], TMP))
