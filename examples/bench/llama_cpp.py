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
import subprocess
import sys

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


def write_f32_gguf(llama_dir, family, model_dir, path):
    """A random-weight F32 GGUF in the shape of model_dir's config.json."""
    sys.path.insert(0, os.path.join(llama_dir, "gguf-py"))
    import gguf
    import numpy as np

    with open(os.path.join(model_dir, "config.json")) as f:
        (layers, d, heads, kv, hd, rotary, ff, eff, experts, top_k, shared, lead,
         vocab) = shape(family, json.load(f))
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
    # random ids and never detokenizes.
    tokens = [b"<unk>", b"<s>", b"</s>"] + [b"<0x%02X>" % i for i in range(256)]
    tokens += [b"t%d" % i for i in range(vocab - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (vocab - 259))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def matrix(name, *dims):
        w.add_tensor(name, rng.standard_normal(dims, dtype=np.float32) * 0.02)

    def vector(name, n, value=1.0):
        w.add_tensor(name, np.full(n, value, dtype=np.float32))

    matrix("token_embd.weight", vocab, d)  # tied: also the head
    vector("output_norm.weight", d)
    for i in range(layers):
        b = "blk.%d." % i
        vector(b + "attn_norm.weight", d)
        matrix(b + "attn_q.weight", heads * hd, d)
        matrix(b + "attn_k.weight", kv * hd, d)
        matrix(b + "attn_v.weight", kv * hd, d)
        matrix(b + "attn_output.weight", d, heads * hd)
        vector(b + "attn_q_norm.weight", hd)
        vector(b + "attn_k_norm.weight", hd)
        vector(b + "post_attention_norm.weight", d)
        if i < lead:
            matrix(b + "ffn_gate.weight", ff, d)
            matrix(b + "ffn_up.weight", ff, d)
            matrix(b + "ffn_down.weight", d, ff)
            continue
        matrix(b + "ffn_gate_inp.weight", experts, d)
        vector(b + "exp_probs_b.bias", experts, 0.0)
        matrix(b + "ffn_gate_exps.weight", experts, eff, d)
        matrix(b + "ffn_up_exps.weight", experts, eff, d)
        matrix(b + "ffn_down_exps.weight", experts, d, eff)
        matrix(b + "ffn_gate_shexp.weight", eff * shared, d)
        matrix(b + "ffn_up_shexp.weight", eff * shared, d)
        matrix(b + "ffn_down_shexp.weight", d, eff * shared)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


class LlamaCpp:
    def __init__(self, llama_dir, work):
        self.dir = os.path.abspath(llama_dir)
        self.work = os.path.join(work, "llama.cpp")
        for tool in ("llama-bench", "llama-quantize"):
            if not os.access(self.tool(tool), os.X_OK):
                sys.exit("suite.py: --llama-cpp %s: no %s (build llama.cpp for the CPU first)"
                         % (llama_dir, self.tool(tool)))
        if not os.path.isdir(os.path.join(self.dir, "gguf-py")):
            sys.exit("suite.py: --llama-cpp %s: no gguf-py/ (a llama.cpp checkout is expected)"
                     % llama_dir)

    def tool(self, name):
        return os.path.join(self.dir, "build", "bin", name)

    def model(self, family, precision, model_dir):
        """(llama.cpp type, GGUF file) for (family, precision), the file
        written on first use; None when llama.cpp has no counterpart."""
        kind = TYPES.get(family, {}).get(precision)
        if kind is None:
            return None
        os.makedirs(self.work, exist_ok=True)
        f32 = os.path.join(self.work, "%s-F32.gguf" % family)
        if not os.path.exists(f32):
            write_f32_gguf(self.dir, family, model_dir, f32 + ".part")
            os.replace(f32 + ".part", f32)
        if kind == "F32":
            return kind, f32
        path = os.path.join(self.work, "%s-%s.gguf" % (family, kind))
        if not os.path.exists(path):
            subprocess.run([self.tool("llama-quantize"), "--pure", f32, path + ".part", kind],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            os.replace(path + ".part", path)
        return kind, path

    def bench(self, gguf, threads):
        """One llama-bench run (it warms up itself): (decode, prefill)
        tokens/s."""
        out = subprocess.run([self.tool("llama-bench"), "-m", gguf, "-p", "128", "-n", "64",
                              "-t", str(threads), "-r", "1", "-o", "json"],
                             check=True, capture_output=True, text=True).stdout
        rows = json.loads(out)
        prefill = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0)
        decode = next(r["avg_ts"] for r in rows if r["n_gen"] > 0)
        return decode, prefill
