#!/usr/bin/python3
"""What quantization costs a model: top-1 agreement and perplexity.

Compiles a model as its checkpoint has it (f32) and with each --quant
precision, feeds every build the same tokens in one prefill (teacher
forcing), and compares each position's logits with the f32 build's:

  top-1 agreement  share of positions whose argmax equals the f32 build's
  KL divergence    mean over positions of KL(p_f32 || p_build), in nats:
                   how far the whole next-token distribution moved (what
                   llama.cpp's perplexity tool reports as KLD)
  perplexity       exp(mean -log p(next token)), over the text's own tokens

The tokens are a text (--text, tokenized by the model's own tokenizer) or,
for a random-weight fixture (--family), a seeded random sequence: random
weights are a weak proxy, so such figures are reported, not gated.

  test/e2e/quant_agreement.py --moec build/bin/moec --model-dir examples/kjv/model \\
      --text examples/kjv/heldout.txt --gate q8=99.5,q4=97
  test/e2e/quant_agreement.py --moec build/bin/moec --family linnet --quant q8 \\
      --quant q4:embedding=q8 --quant q4+int8
  test/e2e/quant_agreement.py --moec build/bin/moec --family ssmoelm --quant f32+int8
  test/e2e/quant_agreement.py --moec build/bin/moec --model-dir examples/kjv/model \\
      --text examples/kjv/heldout.txt --llama-cpp ../llama.cpp \\
      --quant llama.cpp:Q4_0:pure --quant llama.cpp:Q4_K_M

A llama.cpp:TYPE precision (with --llama-cpp, a llama.cpp checkout built for
the CPU; moe100m-physics checkpoints) rounds the matrices with llama-quantize
TYPE (:pure: every matrix at TYPE), dequantizes them and compiles the result
as f32: llama.cpp's rounding, in moec's forward math with f32 inputs.

Prints a markdown table; with --gate, exits 1 when a precision's agreement
is below its bound (in percent).
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "reference"))

from family_e2e import SKIPPED, run, runner_for  # noqa: E402


def compile_model(args, model_dir, out, quant):
    """`quant` is f32 (the checkpoint's weights as they are), or
    MODE[:POLICY] (--quant MODE --quant-policy POLICY), either followed by
    +int8 or +f32 for --activations (by default moec gives --quant builds
    int8 inputs, the others f32; f32+int8: the checkpoint's own packed
    weights, as SSMoELM ships them, with int8 inputs), and last @gptq for
    --quant-calibration with the --calibration text."""
    cmd = [args.moec, "compile", model_dir, "-o", out, "--target", args.target, "-q"]
    quant, at, method = quant.partition("@")
    if at:
        if method != "gptq" or not args.calibration:
            sys.exit("error: @%s: expected @gptq, with --calibration TEXT" % method)
        cmd.append("--quant-calibration=" + args.calibration)
    quant, plus, activations = quant.partition("+")
    if plus:
        cmd.append("--activations=" + activations)
    if quant != "f32":
        mode, _, policy = quant.partition(":")
        cmd.append("--quant=" + mode)
        if policy:
            cmd.append("--quant-policy=" + policy)
    cmd += args.compile_flag
    run(cmd)


def compile_llama_cpp(args, model_dir, out, quant):
    """A llama.cpp:TYPE[:pure] precision: the checkpoint rounded by
    llama-quantize and dequantized, compiled as f32. Returns the bytes of
    its weights as llama.cpp stores them and a note of the types used."""
    if not args.llama_cpp:
        sys.exit("error: %s needs --llama-cpp DIR (a llama.cpp checkout built for the CPU)"
                 % quant)
    parts = quant.split(":")
    if len(parts) not in (2, 3) or parts[-1] == "" or (len(parts) == 3 and parts[2] != "pure"):
        sys.exit("error: %s: expected llama.cpp:TYPE or llama.cpp:TYPE:pure" % quant)
    kind, pure = parts[1], len(parts) == 3
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "bench"))
    from llama_cpp import dequantized_checkpoint
    try:
        size, types = dequantized_checkpoint(args.llama_cpp, model_dir, kind, pure,
                                             out + ".model")
    except (KeyError, RuntimeError, ValueError) as e:
        sys.exit("error: %s: %s" % (quant, e))
    compile_model(args, out + ".model", out, "f32")
    return size, ", ".join("%d %s" % (n, t) for t, n in sorted(types.items()))


def logits_of(runner, exe, tokens, work):
    out = os.path.join(work, "logits.f32")
    run(runner + [exe, "--tokens", ",".join(map(str, tokens)), "--logits-out", out])
    values = np.fromfile(out, dtype=np.float32)
    return values.reshape(len(tokens), -1).astype(np.float64)


def log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def kl_divergence(reference, logits):
    """Mean over positions of KL(softmax(reference) || softmax(logits))."""
    p, q = log_softmax(reference), log_softmax(logits)
    return float((np.exp(p) * (p - q)).sum(axis=1).mean())


def perplexity(logits, tokens):
    """exp(mean -log softmax(logits[t])[tokens[t + 1]])."""
    log_probs = log_softmax(logits[:-1])
    nll = -log_probs[np.arange(len(tokens) - 1), tokens[1:]]
    return float(np.exp(nll.mean()))


def parse_gates(text):
    gates = {}
    for item in filter(None, text.split(",")):
        name, _, bound = item.partition("=")
        gates[name.strip()] = float(bound)
    return gates


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moec", required=True)
    ap.add_argument("--target", default="host")
    ap.add_argument("--model-dir", default="", help="a checkpoint directory")
    ap.add_argument("--family", default="",
                    help="instead: a random-weight fixture of this family")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--text", default="", help="the text to score (tokenized by the model)")
    ap.add_argument("--tokens", type=int, default=256, help="tokens scored (default 256)")
    ap.add_argument("--quant", action="append", default=[],
                    metavar="MODE[:POLICY][+int8|+f32][@gptq]",
                    help="a precision to compare with f32: a --quant mode, with a "
                         "--quant-policy after ':', and +int8 or +f32 for the "
                         "activations (f32+int8: the checkpoint's weights with int8 "
                         "activations), and @gptq to quantize by GPTQ on the "
                         "--calibration text; repeatable; default q8, q4, mixed, q1")
    ap.add_argument("--calibration", default="",
                    help="the text of @gptq precisions (--quant-calibration)")
    ap.add_argument("--gate", default="", metavar="Q=PERCENT,...",
                    help="fail when a precision's top-1 agreement is below PERCENT")
    ap.add_argument("--compile-flag", action="append", default=[],
                    help="an extra moec compile flag for every build, f32 included")
    ap.add_argument("--llama-cpp", default="", metavar="DIR",
                    help="a llama.cpp checkout built for the CPU, for llama.cpp:TYPE precisions")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if bool(args.model_dir) == bool(args.family):
        ap.error("give --model-dir or --family")

    runner, why_not = runner_for(args.moec, args.target)
    if why_not:
        print("skipped: --target=%s cannot run here: %s" % (args.target, why_not))
        return SKIPPED
    work = tempfile.mkdtemp(prefix="moec-quant-")
    model_dir = args.model_dir
    if args.family:
        import families
        model_dir = os.path.join(work, "model")
        families.get(args.family).write_fixture(model_dir, args.preset, args.seed, {})

    if args.text:
        ids = run([args.moec, "tokenize", model_dir, "--file", args.text]).stdout
        tokens = [int(t) for t in ids.strip().split(",")]
        if len(tokens) < args.tokens:
            print("error: %s has %d tokens, fewer than --tokens=%d"
                  % (args.text, len(tokens), args.tokens))
            return 1
        tokens = tokens[:args.tokens]
        source = "%s (first %d tokens)" % (args.text, len(tokens))
    else:
        exe = os.path.join(work, "f32")
        compile_model(args, model_dir, exe, "f32")
        vocab = logits_of(runner, exe, [0], work).shape[1]
        tokens = np.random.default_rng(args.seed).integers(0, vocab, args.tokens).tolist()
        source = "%d random tokens (seed %d)" % (len(tokens), args.seed)

    gates = parse_gates(args.gate)
    rows = []
    reference = None
    failed = []
    notes = []
    for i, quant in enumerate(["f32"] + (args.quant or ["q8", "q4", "mixed", "q1"])):
        exe = os.path.join(work, "build%d" % i)
        weight_bytes = None
        if quant.startswith("llama.cpp:"):
            weight_bytes, types = compile_llama_cpp(args, model_dir, exe, quant)
            notes.append("%s: %s" % (quant, types))
        else:
            compile_model(args, model_dir, exe, quant)
        logits = logits_of(runner, exe, tokens, work)
        ppl = perplexity(logits, np.array(tokens))
        if reference is None:
            reference = (logits, ppl)
        agreement = 100.0 * float((logits.argmax(axis=1) == reference[0].argmax(axis=1)).mean())
        kld = kl_divergence(reference[0], logits)
        if weight_bytes is None:
            weight_bytes = os.path.getsize(exe + ".weights")
        rows.append((quant, weight_bytes, agreement, kld, ppl, ppl - reference[1]))
        if quant in gates and agreement < gates[quant]:
            failed.append("%s: top-1 agreement %.2f%% < %.2f%%" % (quant, agreement, gates[quant]))

    print("model: %s; scored: %s; target: %s" % (model_dir, source, args.target))
    print()
    print("| precision | weight file | top-1 agreement | KL divergence | perplexity | change |")
    print("|---|---:|---:|---:|---:|---:|")
    for quant, size, agreement, kld, ppl, delta in rows:
        print("| %s | %.2f MB | %.2f%% | %.5f | %.3f | %+.3f |"
              % (quant, size / 1e6, agreement, kld, ppl, delta))
    if notes:
        print()
        print("llama.cpp's weight bytes are its GGUF tensors' plus the other tensors at f32;")
        print("the types llama-quantize chose: " + "; ".join(notes))
    for message in failed:
        print("FAILED " + message)
    for quant in gates:
        if quant not in [r[0] for r in rows]:
            print("FAILED --gate names %s, which was not built" % quant)
            failed.append(quant)
    if args.keep:
        print("work directory: " + work)
    else:
        subprocess.run(["rm", "-rf", work])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
