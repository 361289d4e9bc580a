"""llama.cpp beside moec, on the same machine in the same sitting (suite.py --llama-cpp).

Issue 8's llama.cpp figures were measured on another day; this machine's
bandwidth moves by 20% between days, so a comparison is fair only when both
run in one sitting, interleaved. Given a llama.cpp checkout the user built
(CPU: build/bin/llama-bench and build/bin/llama-quantize, and its gguf-py/),
this writes random-weight GGUF files in the shapes of the suite's checkpoints,
quantizes them with llama-quantize --pure (every matrix at the named type, as
moec's --quant does), and runs llama-bench -p 128 -n 64 one repetition at a
time, so that suite.py can alternate it with moec's executable.

Shapes map onto llama.cpp's glm4moe architecture: GQA attention with QK
RMSNorm, partial RoPE, a sigmoid router with a selection bias, a shared
expert, leading dense layers and a tied head, which is moe100m-physics's
layer; SSMoELM's layer is the same without dense layers (its router's softmax
and its full RoPE cost nothing a token). Only those two families have a
llama.cpp counterpart here; the others print no llama.cpp figure.
"""

import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# moec precision -> llama.cpp type, per family.
TYPES = {
    "physics": {"published": "F32", "q8": "Q8_0", "q4": "Q4_0"},
    "ssmoelm": {"published": "TQ1_0", "int8": "TQ1_0", "f32": "F32", "q8": "Q8_0",
                "q4": "Q4_0"},
}


def shape(family, config):
    """(layers, d, heads, kv heads, head dim, rotary dims, dense ff, expert ff,
    experts, top-k, shared experts, dense lead, vocab) from a config.json."""
    c = config
    if family == "physics":
        return (c["n_layers"], c["d_model"], c["n_q_heads"], c["n_kv_heads"], c["head_dim"],
                c["rope_partial"], c["d_ff"], c["d_ff"], c["n_routed_experts"], c["top_k"],
                c["n_shared_experts"], c["moe_first_layer"], c["vocab_size"])
    if family == "ssmoelm":
        return (c["n_layers"], c["d_model"], c["n_heads"], c["n_kv_heads"], c["head_dim"],
                c["head_dim"], c["d_ff"], c["d_ff"], c["n_experts"], c["top_k"],
                c["n_shared_experts"], 0, c["vocab_size"])
    raise KeyError(family)


def tool(llama_dir, name):
    """A llama.cpp tool of a checkout built for the CPU."""
    return os.path.join(llama_dir, "build", "bin", name)


def gguf_matrices(family, config):
    """(llama.cpp name, shape) of every tensor a glm4moe GGUF of this shape
    holds, in file order; the 1-D ones are norm weights and selection biases."""
    (layers, d, heads, kv, hd, _rotary, ff, eff, experts, _top_k, shared, lead,
     vocab) = shape(family, config)
    out = [("token_embd.weight", (vocab, d)), ("output_norm.weight", (d,))]  # tied head
    for i in range(layers):
        b = "blk.%d." % i
        out += [(b + "attn_norm.weight", (d,)), (b + "attn_q.weight", (heads * hd, d)),
                (b + "attn_k.weight", (kv * hd, d)), (b + "attn_v.weight", (kv * hd, d)),
                (b + "attn_output.weight", (d, heads * hd)), (b + "attn_q_norm.weight", (hd,)),
                (b + "attn_k_norm.weight", (hd,)), (b + "post_attention_norm.weight", (d,))]
        if i < lead:
            out += [(b + "ffn_gate.weight", (ff, d)), (b + "ffn_up.weight", (ff, d)),
                    (b + "ffn_down.weight", (d, ff))]
            continue
        out += [(b + "ffn_gate_inp.weight", (experts, d)), (b + "exp_probs_b.bias", (experts,)),
                (b + "ffn_gate_exps.weight", (experts, eff, d)),
                (b + "ffn_up_exps.weight", (experts, eff, d)),
                (b + "ffn_down_exps.weight", (experts, d, eff)),
                (b + "ffn_gate_shexp.weight", (eff * shared, d)),
                (b + "ffn_up_shexp.weight", (eff * shared, d)),
                (b + "ffn_down_shexp.weight", (d, eff * shared))]
    return out


def write_f32_gguf(llama_dir, family, config, path, tensors=None):
    """An F32 GGUF of config's shape: `tensors` (llama.cpp name -> array)
    where given, random weights (and unit norms) for the rest."""
    sys.path.insert(0, os.path.join(llama_dir, "gguf-py"))
    import gguf
    import numpy as np

    (layers, d, heads, kv, hd, rotary, ff, eff, experts, top_k, shared, lead,
     vocab) = shape(family, config)
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "glm4moe")
    w.add_block_count(layers)
    w.add_context_length(2048)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(rotary)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_expert_count(experts)
    w.add_expert_used_count(top_k)
    w.add_expert_feed_forward_length(eff)
    w.add_expert_shared_count(shared)
    w.add_leading_dense_block_count(lead)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    w.add_expert_weights_norm(True)
    w.add_expert_weights_scale(1.0)
    # A byte-fallback vocabulary of the model's size: llama-bench feeds
    # random ids and llama-quantize never tokenizes.
    tokens = [b"<unk>", b"<s>", b"</s>"] + [b"<0x%02X>" % i for i in range(256)]
    tokens += [b"t%d" % i for i in range(vocab - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (vocab - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    for name, dims in gguf_matrices(family, config):
        if tensors and name in tensors:
            value = np.ascontiguousarray(tensors[name], dtype=np.float32)
            if value.shape != dims:
                raise ValueError("%s: shape %s, expected %s" % (name, value.shape, dims))
        elif len(dims) == 1:
            value = np.full(dims, 0.0 if name.endswith(".bias") else 1.0, dtype=np.float32)
        else:
            value = rng.standard_normal(dims, dtype=np.float32) * 0.02
        w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def physics_to_gguf(config):
    """moe100m-physics checkpoint name -> llama.cpp name, for the matrices
    llama-quantize rounds (the router stays float there as in moec)."""
    names = {"embed.weight": "token_embd.weight"}
    for i in range(config["n_layers"]):
        c, g = "blocks.%d." % i, "blk.%d." % i
        for ours, theirs in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"),
                             ("o_proj", "attn_output")):
            names[c + "attn.%s.weight" % ours] = g + theirs + ".weight"
        if i < config["moe_first_layer"]:
            for part in ("gate", "up", "down"):
                names[c + "ffn.%s.weight" % part] = g + "ffn_%s.weight" % part
            continue
        for part in ("gate", "up", "down"):
            names[c + "ffn." + part] = g + "ffn_%s_exps.weight" % part
            names[c + "ffn.shared_expert.%s.weight" % part] = g + "ffn_%s_shexp.weight" % part
    return names


def dequantized_checkpoint(llama_dir, model_dir, kind, pure, out_dir):
    """Round a moe100m-physics checkpoint's matrices the way llama-quantize
    does for `kind` (its own choice of type per tensor, or every matrix at
    `kind` with `pure`), and write them back dequantized, as F32, into a
    checkpoint in out_dir that moec compiles like the original: the error
    llama.cpp's formats make, in moec's exact forward math. Returns (bytes of
    the quantized GGUF's tensors plus the other tensors at f32, {llama.cpp
    type: tensors of it})."""
    sys.path.insert(0, os.path.join(llama_dir, "gguf-py"))
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "test", "reference"))
    import gguf
    import numpy as np
    from safetensors_io import read_safetensors, write_safetensors

    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    if config.get("_model_class") != "MoEModel":
        raise ValueError("%s: not a moe100m-physics checkpoint (its config.json has no "
                         "_model_class MoEModel); only that family is mapped onto llama.cpp's "
                         "names" % model_dir)
    checkpoint = {k: v.float().numpy() for k, v in
                  read_safetensors(os.path.join(model_dir, "model.safetensors")).items()}
    names = physics_to_gguf(config)
    missing = sorted(set(names) - set(checkpoint))
    if missing:
        raise KeyError("%s: no %s" % (model_dir, ", ".join(missing)))
    os.makedirs(out_dir, exist_ok=True)
    f32 = os.path.join(out_dir, "F32.gguf")
    quantized = os.path.join(out_dir, "quantized-%s.gguf" % kind)
    write_f32_gguf(llama_dir, "physics", config, f32,
                   {theirs: checkpoint[ours] for ours, theirs in names.items()})
    done = subprocess.run([tool(llama_dir, "llama-quantize")] + (["--pure"] if pure else [])
                          + [f32, quantized, kind],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError("llama-quantize %s failed:\n%s" % (kind, done.stderr[-2000:]))
    by_name = {t.name: t for t in gguf.GGUFReader(quantized).tensors}
    types, size = {}, 0
    for ours, value in checkpoint.items():
        t = by_name.get(names.get(ours, ""))
        if t is None:
            size += value.size * 4
            continue
        checkpoint[ours] = gguf.quants.dequantize(t.data, t.tensor_type).reshape(value.shape)
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        size += int(t.n_bytes)
    write_safetensors(os.path.join(out_dir, "model.safetensors"),
                      {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in checkpoint.items()})
    for name in os.listdir(model_dir):
        if name != "model.safetensors" and os.path.isfile(os.path.join(model_dir, name)):
            shutil.copy(os.path.join(model_dir, name), out_dir)
    os.remove(f32)
    os.remove(quantized)
    return size, types


class LlamaCpp:
    def __init__(self, llama_dir, work):
        self.dir = os.path.abspath(llama_dir)
        self.work = os.path.join(work, "llama.cpp")
        for name in ("llama-bench", "llama-quantize"):
            if not os.access(self.tool(name), os.X_OK):
                sys.exit("suite.py: --llama-cpp %s: no %s (build llama.cpp for the CPU first)"
                         % (llama_dir, self.tool(name)))
        if not os.path.isdir(os.path.join(self.dir, "gguf-py")):
            sys.exit("suite.py: --llama-cpp %s: no gguf-py/ (a llama.cpp checkout is expected)"
                     % llama_dir)

    def tool(self, name):
        return tool(self.dir, name)

    def model(self, family, precision, model_dir):
        """(llama.cpp type, GGUF file) for (family, precision), the file
        written on first use; None when llama.cpp has no counterpart."""
        kind = TYPES.get(family, {}).get(precision)
        if kind is None:
            return None
        os.makedirs(self.work, exist_ok=True)
        f32 = os.path.join(self.work, "%s-F32.gguf" % family)
        if not os.path.exists(f32):
            with open(os.path.join(model_dir, "config.json")) as f:
                config = json.load(f)
            write_f32_gguf(self.dir, family, config, f32 + ".part")
            os.replace(f32 + ".part", f32)
        if kind == "F32":
            return kind, f32
        path = os.path.join(self.work, "%s-%s.gguf" % (family, kind))
        if not os.path.exists(path):
            subprocess.run([self.tool("llama-quantize"), "--pure", f32, path + ".part", kind],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            os.replace(path + ".part", path)
        return kind, path

    def bench(self, gguf, threads, preexec_fn=None):
        """One llama-bench run (it warms up itself): (decode, prefill)
        tokens/s; `preexec_fn` pins it as suite.py pins moec's runs."""
        out = subprocess.run([self.tool("llama-bench"), "-m", gguf, "-p", "128", "-n", "64",
                              "-t", str(threads), "-r", "1", "-o", "json"],
                             check=True, capture_output=True, text=True,
                             preexec_fn=preexec_fn).stdout
        rows = json.loads(out)
        prefill = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0)
        decode = next(r["avg_ts"] for r in rows if r["n_gen"] > 0)
        return decode, prefill
