#!/usr/bin/python3
"""Self-test of the linnet-497M reference and fixture generator (linnet_model.py).

    /usr/bin/python3 test/reference/test_linnet_reference.py [-k SUBSTRING] [-v] [--keep]

No pytest needed: every `test_*` function below is run, the last line printed is
"N passed, M failed" and the exit code is 0 only if nothing failed.
"""
from __future__ import annotations

import collections
import json
import math
import os
import sys
import tempfile
import zipfile

import numpy as np
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import linnet_model as lm  # noqa: E402
from safetensors_io import read_safetensors, read_safetensors_header  # noqa: E402
from selftest import rel_err, run, run_tests  # noqa: E402

PY = "/usr/bin/python3"
TMP = tempfile.mkdtemp(prefix="moec_linnet_test_")
TOKS_TINY = [3, 17, 42, 99, 0, 5, 5, 64, 23, 81, 12, 7, 55, 31, 90, 2]
TOKS_TINY2 = [1, 76, 30, 4, 4, 50, 12, 66, 9, 41, 0, 23, 70]


def tiny_model(preset="tiny", seed=1, **ov):
    c = lm.preset_config(preset)
    return lm.Model(lm.build_state_dict(c, seed), ov or None), c


_FIXTURES = {}


def fixture(preset="tiny", seed=1, **opts) -> str:
    key = (preset, seed, tuple(sorted(opts.items())))
    if key not in _FIXTURES:
        d = os.path.join(TMP, f"fx{len(_FIXTURES)}_{preset}")
        lm.write_fixture(d, preset, seed, **opts)
        _FIXTURES[key] = d
    return _FIXTURES[key]


# --------------------------------------------------------------------------- prefill vs decode

def test_forward_equals_decode():
    for preset, toks in (("tiny", TOKS_TINY), ("tiny2", TOKS_TINY2)):
        m, _ = tiny_model(preset, seed=2)
        for t in (toks, toks[:1], toks[:3], list(reversed(toks))):
            a, b = m.forward(t), m.decode(t)
            assert a.shape == (len(t), m.vocab) and a.dtype == torch.float32
            assert torch.isfinite(a).all()
            e = rel_err(b, a)
            assert e <= 1e-5, f"{preset} T={len(t)}: forward vs decode rel err {e:.3g}"
            assert float((a - b).abs().max()) <= 2e-5


def test_forward_equals_decode_float64():
    m, _ = tiny_model("tiny2", seed=5, dtype="float64")
    a, b = m.forward(TOKS_TINY2), m.decode(TOKS_TINY2)
    assert a.dtype == torch.float64
    assert float((a - b).abs().max()) < 1e-11


def test_forward_logits_not_degenerate():
    m, _ = tiny_model("tiny")
    lg = m.forward(TOKS_TINY)
    assert 0.5 < float(lg.std()) < 20
    assert len(set(lg.argmax(-1).tolist())) > 3


# --------------------------------------------------------------------------- causal conv

def test_causal_conv_hand_example():
    h = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    w = torch.tensor([[[0.5, -1.0, 2.0]], [[3.0, 0.25, -0.5]]])       # [C=2, 1, K=3]
    u = lm.causal_conv_prefill(h, w)
    # u[t,c] = w[c,0,0]*h[t-2,c] + w[c,0,1]*h[t-1,c] + w[c,0,2]*h[t,c], h[<0] = 0
    want = torch.tensor([
        [2.0 * 1, -0.5 * 10],                                   # t=0: only the current tap
        [-1.0 * 1 + 2.0 * 2, 0.25 * 10 - 0.5 * 20],             # t=1: one zero-padded tap
        [0.5 * 1 - 1.0 * 2 + 2.0 * 3, 3.0 * 10 + 0.25 * 20 - 0.5 * 30],
        [0.5 * 2 - 1.0 * 3 + 2.0 * 4, 3.0 * 20 + 0.25 * 30 - 0.5 * 40],
    ])
    assert torch.allclose(u, want, atol=0, rtol=1e-6), (u, want)
    # same thing as PyTorch's Conv1d (cross-correlation) after left padding K-1
    ref = torch.nn.functional.conv1d(torch.nn.functional.pad(h.T[None], (2, 0)), w, groups=2)[0].T
    assert torch.allclose(u, ref, atol=1e-6)


def test_conv_first_positions_see_zero_padding():
    """Zeroing conv tap 0 (x[t-2]) cannot change positions 0 and 1; zeroing tap 1
    (x[t-1]) cannot change position 0 -- in every layer, in both code paths."""
    c = lm.preset_config("tiny")
    sd = lm.build_state_dict(c, 3)
    base = lm.Model(sd).forward(TOKS_TINY)
    for tap, unchanged in ((0, 2), (1, 1)):
        sd2 = dict(sd)
        for i in range(c["n_layer"]):
            k = f"transformer.h.{i}.attn.l_conv.weight"
            w = sd2[k].clone()
            w[:, 0, tap] = 0
            sd2[k] = w
        m2 = lm.Model(sd2)
        for lg in (m2.forward(TOKS_TINY), m2.decode(TOKS_TINY)):
            assert float((lg[:unchanged] - base[:unchanged]).abs().max()) < 2e-5
            assert float((lg[unchanged] - base[unchanged]).abs().max()) > 1e-3


def test_decode_conv_state_holds_last_ln1_outputs():
    m, _ = tiny_model("tiny")
    st = m.new_state()
    assert all(float(s.abs().max()) == 0 for s in st.conv)
    toks = [5, 9, 13]
    for t in toks:
        st.step(t)
    lw = m.layers[0]
    h = lm.rms_norm(m.wte[torch.tensor(toks)], lw.ln1)
    assert st.conv[0].shape == (lm.CONV_KERNEL - 1, m.cfg["n_embd"])
    assert torch.allclose(st.conv[0], h[-2:], atol=1e-6)      # oldest first
    assert len(st.k[0]) == 3 and st.k[0][0].shape == (m.cfg["n_kv_head"], m.cfg["head_dim"])


# --------------------------------------------------------------------------- RoPE / QK norm

def test_rope_half_split_hand_example():
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])                # [T=1, H=1, hd=4]
    inv = torch.tensor([1.0, 0.5])
    cos, sin = lm.rope_cos_sin(torch.tensor([1]), inv)
    c1, s1, c2, s2 = math.cos(1), math.sin(1), math.cos(0.5), math.sin(0.5)
    # pairs (0,2) and (1,3): x' = x*cos + cat(-x[2:], x[:2])*sin
    want = torch.tensor([1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2])
    got = lm.rope_half_split(x, cos, sin)[0, 0]
    assert torch.allclose(got, want, atol=1e-6), (got, want)
    got2 = lm.rope_half_split_complex(x[0], cos[0], sin[0])[0]
    assert torch.allclose(got2, want, atol=1e-6)
    # position 0 is the identity
    c0, s0 = lm.rope_cos_sin(torch.tensor([0]), inv)
    assert torch.equal(lm.rope_half_split(x, c0, s0), x)


def test_inv_freq_values():
    f = lm.inv_freq_formula(64)
    exact = torch.tensor([50000.0 ** (-2 * j / 64) for j in range(32)], dtype=torch.float64)
    assert f.dtype == torch.float32 and f.shape == (32,)
    assert float(((f.double() - exact) / exact).abs().max()) < 1e-6
    sd = torch.load(os.path.join(fixture("tiny"), "pytorch_model.bin"), weights_only=True)
    for i in range(2):
        b = sd[f"transformer.h.{i}.attn.rotary_emb.inv_freq"]
        assert b.dtype == torch.float32 and torch.equal(b, lm.inv_freq_formula(16))
    # the reference uses the stored buffer: a different buffer changes the logits,
    # rope_theta recomputes it and then matches the 50000 buffer
    m = lm.Model.from_dir(fixture("tiny"))
    base = m.forward(TOKS_TINY)
    sd2 = {k: (v * 2 if k.endswith("inv_freq") else v) for k, v in sd.items()}
    assert float((lm.Model(sd2).forward(TOKS_TINY) - base).abs().max()) > 1e-3
    assert float((lm.Model(sd2, {"rope_theta": 50000.0}).forward(TOKS_TINY) - base).abs().max()) < 1e-6
    assert rel_err(lm.Model(sd, {"rope_angles": "fp64"}).forward(TOKS_TINY), base) < 1e-5


def test_qk_layernorm_matches_torch_layernorm():
    x = torch.randn(5, 3, 16, generator=torch.Generator().manual_seed(0)) * 3 + 1
    ref = torch.nn.functional.layer_norm(x, (16,), eps=1e-5)
    assert torch.allclose(lm.layer_norm_noaffine(x), ref, atol=1e-5)
    # a LayerNorm, not an RMSNorm: output has zero mean
    assert float(lm.layer_norm_noaffine(x).mean(-1).abs().max()) < 1e-5


def test_qk_norm_after_rope():
    """Applying the QK LayerNorm before RoPE (wrong) gives different logits, at every
    position but the first (RoPE is the identity at position 0)."""
    m, _ = tiny_model("tiny")
    good = m.forward(TOKS_TINY)
    bad = m.forward(TOKS_TINY, _qk_norm_before_rope=True)
    assert float((good[0] - bad[0]).abs().max()) < 1e-5
    assert float((good - bad).abs().max()) > 1e-2


def test_rms_norm_eps():
    x = torch.tensor([[3.0, 4.0]])
    y = lm.rms_norm(x, torch.tensor([1.0, 2.0]))
    r = 1 / math.sqrt((9 + 16) / 2 + 1e-6)
    assert torch.allclose(y, torch.tensor([[3 * r, 8 * r]]), atol=1e-7)
    assert lm.RMS_EPS == 1e-6 and lm.QK_EPS == 1e-5 and lm.ROPE_THETA == 50000.0


# --------------------------------------------------------------------------- GQA / MoE by hand

def test_gqa_head_mapping():
    """kv head g serves q heads g*G .. g*G+G-1: with V of kv head 0 zeroed and c_proj
    columns of q heads G.. zeroed, attention adds exactly nothing."""
    c = lm.preset_config("tiny2")       # 6 q heads, 2 kv heads, G = 3
    sd = lm.build_state_dict(c, 4)
    d, hd, G = c["n_embd"], c["head_dim"], c["n_head"] // c["n_kv_head"]
    kv = c["n_kv_head"] * hd
    sd_a, sd_b = dict(sd), dict(sd)
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}.attn."
        w = sd[p + "c_attn.weight"].clone()
        w[d + kv: d + kv + hd] = 0                   # V rows of kv head 0
        sd_a[p + "c_attn.weight"] = w
        o = sd[p + "c_proj.weight"].clone()
        o[:, G * hd:] = 0                            # q heads G..H-1
        sd_a[p + "c_proj.weight"] = o
        sd_b[p + "c_proj.weight"] = torch.zeros_like(o)
    ta, tb = [], []
    lm.Model(sd_a).forward(TOKS_TINY2, trace=ta)
    lm.Model(sd_b).forward(TOKS_TINY2, trace=tb)
    assert float((ta[-1]["hidden"] - tb[-1]["hidden"]).abs().max()) < 1e-5
    # the wrong mapping (kv head = q head % n_kv) would not cancel: check that heads do attend
    sd_c = dict(sd_a)
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}.attn."
        o = sd[p + "c_proj.weight"].clone()
        o[:, :G * hd] = 0
        sd_c[p + "c_proj.weight"] = o
    tc = []
    lm.Model(sd_c).forward(TOKS_TINY2, trace=tc)
    assert float((tc[-1]["hidden"] - tb[-1]["hidden"]).abs().max()) > 1e-3


def test_moe_layer_by_hand_gate_rows_first():
    """One layer with the attention output zeroed: hidden = x + sum_k w_k Expert(h2),
    softmax over all experts, top-2 renormalised, w_v rows [0, ffn) = gate (silu)."""
    c = lm.preset_config("tiny")
    sd = lm.build_state_dict(c, 6)
    sd["transformer.h.0.attn.c_proj.weight"] = torch.zeros(c["n_embd"], c["n_embd"])
    tr = []
    lm.Model(sd).forward(TOKS_TINY, trace=tr)
    x = sd["transformer.wte.weight"][torch.tensor(TOKS_TINY)]
    h2 = lm.rms_norm(x, sd["transformer.h.0.ln2.weight"])
    p = torch.softmax(h2 @ sd["transformer.h.0.moe.router.weight"].T, dim=-1)
    F_ = c["ffn"]

    def expert(e, z, swap=False):
        wv = sd[f"transformer.h.0.moe.experts.{e}.swiglu.w_v.weight"]
        g, v = (wv[F_:], wv[:F_]) if swap else (wv[:F_], wv[F_:])
        a = torch.nn.functional.silu(z @ g.T) * (z @ v.T)
        return a @ sd[f"transformer.h.0.moe.experts.{e}.c_proj.weight"].T

    for swap, should_match in ((False, True), (True, False)):
        want = x.clone()
        for t in range(len(TOKS_TINY)):
            top = sorted(range(c["n_experts"]), key=lambda e: -float(p[t, e]))[:2]
            ws = p[t, top] / p[t, top].sum()
            for wk, e in zip(ws, top):
                want[t] += wk * expert(e, h2[t:t + 1], swap)[0]
        diff = float((tr[0]["hidden"] - want).abs().max())
        assert (diff < 1e-5) == should_match, (swap, diff)
    assert tr[0]["experts"].shape == (len(TOKS_TINY), 2) and tr[0]["experts"].dtype == torch.long
    assert torch.allclose(tr[0]["weights"].sum(-1), torch.ones(len(TOKS_TINY)), atol=1e-6)


def test_trace_contents():
    m, c = tiny_model("tiny2")
    tr = []
    lg = m.forward(TOKS_TINY2, trace=tr)
    assert [t["layer"] for t in tr] == list(range(c["n_layer"]))
    for t in tr:
        assert t["hidden"].shape == (len(TOKS_TINY2), c["n_embd"])
        assert t["experts"].shape == (len(TOKS_TINY2), 2) and t["weights"].shape == (len(TOKS_TINY2), 2)
        assert int(t["experts"].min()) >= 0 and int(t["experts"].max()) < c["n_experts"]
        assert bool((t["experts"][:, 0] != t["experts"][:, 1]).all())
        assert bool((t["weights"][:, 0] >= t["weights"][:, 1]).all())
    again = lm.rms_norm(tr[-1]["hidden"], m.final_norm) @ m.wte.T
    assert torch.equal(again, lg)


def test_min_margins_and_seed_rejection():
    m, _ = tiny_model("tiny")
    r = lm.min_margins(m, [TOKS_TINY, TOKS_TINY[:5]])
    assert 0 < r["min_margin"] < math.inf and 0 < r["min_prob_margin"] <= r["min_margin"]
    assert r["total"] == (16 + 5) * 2 and r["where"][1] in (0, 1)
    assert r["topk_margin"] == r["min_margin"]
    # by hand on one list
    tr = []
    m.forward(TOKS_TINY, trace=tr)
    gaps = [float((s[:, 1] - s[:, 2]).min()) for s in
            (torch.sort(t["router_logits"], dim=-1, descending=True).values for t in tr)]
    assert abs(lm.min_margins(m, [TOKS_TINY])["min_margin"] - min(gaps)) < 1e-7
    # an impossible margin makes write_fixture give up; a tiny one accepts the first seed
    try:
        lm.write_fixture(os.path.join(TMP, "nomargin"), "tiny", 1, check_tokens=[TOKS_TINY[:4]],
                         margin_min=1e9, weights="safetensors")
    except ValueError as e:
        assert "margin" in str(e)
    else:
        raise AssertionError("expected ValueError")
    info = lm.write_fixture(os.path.join(TMP, "margin"), "tiny", 7, check_tokens=[TOKS_TINY],
                            margin_min=1e-12, weights="safetensors")
    assert info["seed"] == 7 and info["margins"]["min_margin"] >= 1e-12


# --------------------------------------------------------------------------- fixture format

# spec §3 table, written out independently of linnet_model.tensor_shapes
def spec_table(V, d, L, kv_rows, hd2, E, F_):
    t = [("transformer.wte.weight", (V, d))]
    for i in range(L):
        p = f"transformer.h.{i}."
        t += [(p + "ln1.weight", (d,)), (p + "ln2.weight", (d,)), (p + "attn.l_conv.weight", (d, 1, 3)),
              (p + "attn.c_attn.weight", (d + kv_rows, d)), (p + "attn.c_proj.weight", (d, d)),
              (p + "attn.rotary_emb.inv_freq", (hd2,)), (p + "moe.router.weight", (E, d))]
        for e in range(E):
            t += [(p + f"moe.experts.{e}.swiglu.w_v.weight", (2 * F_, d)),
                  (p + f"moe.experts.{e}.c_proj.weight", (d, F_))]
    t += [("transformer.ln_f.weight", (d,)), ("lm_head.weight", (V, d))]
    return t


def test_full_size_names_and_shapes():
    shapes = lm.tensor_shapes(lm.preset_config("full"))
    want = spec_table(32768, 768, 12, 512, 32, 8, 2048)
    assert len(shapes) == 279 == len(want)
    assert list(shapes.items()) == want
    assert shapes["transformer.h.0.attn.c_attn.weight"] == (1280, 768)
    assert shapes["transformer.h.11.moe.experts.7.swiglu.w_v.weight"] == (4096, 768)
    # unique parameters (tied once, no buffers) = the card's count
    n = sum(int(np.prod(s)) for k, s in shapes.items() if k != "lm_head.weight" and not k.endswith("inv_freq"))
    assert n == lm.FULL_PARAMS


def test_param_counts():
    assert lm.param_counts("full") == (497_145_600, 157_406_976)
    for preset in ("tiny", "tiny2"):
        c = lm.preset_config(preset)
        n = sum(int(np.prod(s)) for k, s in lm.tensor_shapes(c).items()
                if k != "lm_head.weight" and not k.endswith("inv_freq"))
        total, active = lm.param_counts(preset)
        assert total == n
        expert = 3 * c["ffn"] * c["n_embd"]
        assert active == total - c["n_layer"] * (c["n_experts"] - c["top_k"]) * expert
        assert lm.param_counts(lm.Model.from_dir(fixture(preset))) == (total, active)


def test_fixture_bin_format():
    d = fixture("tiny")
    path = os.path.join(d, "pytorch_model.bin")
    assert zipfile.is_zipfile(path)
    names = zipfile.ZipFile(path).namelist()
    assert "pytorch_model/data.pkl" in names
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(sd, collections.OrderedDict)
    want = spec_table(100, 64, 2, 2 * 2 * 16, 8, 5, 40)
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == want
    assert all(v.dtype == torch.float32 for v in sd.values())
    # tied: one storage, both names
    assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr()
    n_storages = len([n for n in names if "/data/" in n])
    assert n_storages == len(want) - 1
    # nn.Module-style _metadata (every module path, version 1)
    meta = sd._metadata
    assert meta[""] == {"version": 1} and "transformer.h.1.attn.q_norm" in meta
    assert "transformer.h.0.moe.experts.4.swiglu.w_v" in meta and list(meta)[-1] == "lm_head"


def test_fixture_safetensors_format():
    d = fixture("tiny")
    header, meta, _, _ = read_safetensors_header(os.path.join(d, "model.safetensors"))
    want = dict(spec_table(100, 64, 2, 64, 8, 5, 40))
    del want["transformer.wte.weight"]               # HF converter keeps lm_head.weight
    assert {k: tuple(v["shape"]) for k, v in header.items()} == want
    assert all(v["dtype"] == "F32" for v in header.values())
    assert meta == {"format": "pt"}
    for tied, has in (("wte", {"transformer.wte.weight"}), ("both", {"transformer.wte.weight", "lm_head.weight"})):
        h, _, _, _ = read_safetensors_header(os.path.join(fixture("tiny", safetensors_tied=tied,
                                                                  weights="safetensors"), "model.safetensors"))
        assert {"transformer.wte.weight", "lm_head.weight"} & set(h) == has
        m = lm.Model.from_dir(fixture("tiny", safetensors_tied=tied, weights="safetensors"))
        assert torch.equal(m.forward(TOKS_TINY), lm.Model.from_dir(fixture("tiny")).forward(TOKS_TINY))


def test_both_weight_files_identical():
    for preset in ("tiny", "tiny2"):
        d = fixture(preset)
        b = lm.strip_prefixes(lm.load_state_dict(d, prefer="bin"))
        s = lm.strip_prefixes(lm.load_state_dict(d, prefer="safetensors"))
        s["transformer.wte.weight"] = s["lm_head.weight"]
        assert set(b) == set(s)
        for k in b:
            assert b[k].dtype == s[k].dtype and torch.equal(b[k], s[k]), k
        mb = lm.Model.from_dir(d, prefer="bin")
        ms = lm.Model.from_dir(d, prefer="safetensors")
        toks = TOKS_TINY if preset == "tiny" else TOKS_TINY2
        assert torch.equal(mb.forward(toks), ms.forward(toks))


def test_streamed_safetensors_equals_in_memory():
    a = fixture("tiny2", seed=9, weights="safetensors")       # streamed, one tensor at a time
    b = fixture("tiny2", seed=9)                              # built in memory for the .bin
    with open(os.path.join(a, "model.safetensors"), "rb") as f1, open(os.path.join(b, "model.safetensors"), "rb") as f2:
        assert f1.read() == f2.read()
    assert not os.path.exists(os.path.join(a, "pytorch_model.bin"))
    c = fixture("tiny2", seed=9, weights="bin")
    assert not os.path.exists(os.path.join(c, "model.safetensors"))


def test_fixture_deterministic_in_seed():
    a = lm.build_state_dict(lm.preset_config("tiny"), 11)
    b = lm.build_state_dict(lm.preset_config("tiny"), 11)
    c = lm.build_state_dict(lm.preset_config("tiny"), 12)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["transformer.h.0.attn.c_attn.weight"], c["transformer.h.0.attn.c_attn.weight"])


def test_prefix_option():
    d = fixture("tiny", prefix="_orig_mod.")
    sd = torch.load(os.path.join(d, "pytorch_model.bin"), weights_only=True)
    assert all(k.startswith("_orig_mod.") for k in sd)
    assert "_orig_mod" in sd._metadata and "" in sd._metadata
    h, _, _, _ = read_safetensors_header(os.path.join(d, "model.safetensors"))
    assert all(k.startswith("_orig_mod.") for k in h)
    ref = lm.Model.from_dir(fixture("tiny")).forward(TOKS_TINY)
    for prefer in ("bin", "safetensors"):
        assert torch.equal(lm.Model.from_dir(d, prefer=prefer).forward(TOKS_TINY), ref)
    # hf_upload.py does not find "transformer.wte.weight" -> ships the static hf/config.json
    cfg = json.load(open(os.path.join(d, "config.json")))
    assert cfg["vocab_size"] == 32768 and cfg["depth"] == 12 and "sequence_mixing" in cfg


def test_half_precision_sources():
    ref_sd = lm.build_state_dict(lm.preset_config("tiny"), 1)
    for dt, tdt in (("F16", torch.float16), ("BF16", torch.bfloat16)):
        d = fixture("tiny", dtype=dt)
        header, _, _, _ = read_safetensors_header(os.path.join(d, "model.safetensors"))
        for k, v in header.items():
            assert v["dtype"] == ("F32" if k.endswith("inv_freq") else dt), (k, v["dtype"])
        sd = torch.load(os.path.join(d, "pytorch_model.bin"), weights_only=True)
        assert sd["transformer.h.0.attn.c_attn.weight"].dtype == tdt
        assert sd["transformer.h.0.attn.rotary_emb.inv_freq"].dtype == torch.float32
        assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr()
        st = read_safetensors(os.path.join(d, "model.safetensors"))
        for k, v in st.items():
            assert torch.equal(v, sd[k]), k
            assert torch.equal(v.float(), ref_sd[k].to(tdt).float() if not k.endswith("inv_freq") else ref_sd[k])
        mb, ms = lm.Model.from_dir(d, prefer="bin"), lm.Model.from_dir(d)
        a = ms.forward(TOKS_TINY)
        assert torch.equal(mb.forward(TOKS_TINY), a)
        assert rel_err(ms.decode(TOKS_TINY), a) < 1e-5


def test_config_json_is_descriptive_only():
    d = fixture("tiny")
    cfg = json.load(open(os.path.join(d, "config.json")))
    # what hf_upload.py writes: LLMConfig(depth=n_embd//64) without the vocab
    assert cfg["vocab_size"] == 50257 and cfg["torch_dtype"] == "bfloat16"
    assert cfg["n_embd"] == 64 and cfg["n_head"] == 1 and cfg["ffn_dim"] == 192
    m = lm.Model.from_dir(d)
    assert m.vocab == 100 and m.cfg["n_head"] == 4 and m.cfg["ffn"] == 40
    full_cfg = lm.upload_config(lm.preset_config("full"), "auto")
    assert (full_cfg["n_layer"], full_cfg["n_head"], full_cfg["n_kv_head"], full_cfg["n_embd"],
            full_cfg["ffn_dim"], full_cfg["vocab_size"]) == (12, 12, 4, 768, 2048, 50257)
    tok = json.load(open(os.path.join(d, "tokenizer_config.json")))
    assert tok["eos_token"] == "<|endoftext|>" and tok["bos_token"] is None


def test_loader_errors():
    d = fixture("tiny")
    m = lm.Model.from_dir(d)
    for bad in ([100], [-1], []):
        try:
            m.forward(bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"tokens {bad} accepted")
    sd = lm.load_state_dict(d, prefer="bin")
    for mutate, msg in ((lambda s: s.pop("transformer.h.1.moe.router.weight"), "missing"),
                        (lambda s: s.__setitem__("lm_head.weight", s["lm_head.weight"] + 1), "differ"),
                        (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), "unexpected")):
        s2 = collections.OrderedDict((k, v.clone()) for k, v in sd.items())
        mutate(s2)
        try:
            lm.Model(s2)
        except ValueError as e:
            assert msg in str(e), str(e)
        else:
            raise AssertionError(msg)
    # no inv_freq buffers: head_dim falls back to 64 (spec §2) -> tiny's 64-wide model = 1 head
    s3 = {k: v for k, v in sd.items() if not k.endswith("inv_freq")}
    try:
        lm.Model(s3)
    except ValueError as e:                  # 64 rows of c_attn cannot split into 2 kv heads of 64
        assert "c_attn" in str(e)
    else:
        raise AssertionError("expected ValueError")
    assert lm.Model(s3, {"head_dim": 16}).cfg["n_head"] == 4


def test_cli_fixture_and_logits():
    d = os.path.join(TMP, "cli")
    me = os.path.join(_HERE, "linnet_model.py")
    r = run([PY, me, "fixture", "--out", d, "--preset", "tiny2", "--seed", "3",
             "--check-tokens", ",".join(map(str, TOKS_TINY2))])
    assert r.returncode == 0, r.stderr
    seed = int(r.stdout.split()[1])
    out = os.path.join(TMP, "cli.f32")
    toks = ",".join(map(str, TOKS_TINY2))
    m = lm.Model(lm.build_state_dict(lm.preset_config("tiny2"), seed))
    ref = m.forward(TOKS_TINY2).numpy()
    for extra in ([], ["--decode"], ["--prefer", "bin"]):
        r = run([PY, me, "logits", "--model", d, "--tokens", toks, "--out", out] + extra)
        assert r.returncode == 0, r.stderr
        got = np.fromfile(out, dtype="<f4").reshape(len(TOKS_TINY2), 77)
        assert rel_err(torch.from_numpy(got), torch.from_numpy(ref)) < 1e-5
    r = run([PY, me, "logits", "--model", d, "--tokens", "5,77", "--out", out])
    assert r.returncode == 2 and "out of range" in r.stderr
    r = run([PY, me, "counts", "--preset", "full"])
    assert r.stdout.split() == ["497145600", "157406976"]


if __name__ == "__main__":
    sys.exit(run_tests(globals(), sys.argv[1:], TMP))
