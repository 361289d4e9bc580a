#!/usr/bin/python3
"""End-to-end text test of one family: text in, text out, as the reference would.

1. Writes a random-weight fixture of --family (test/reference/families.py) with a
   vocabulary that holds a tokenizer in the family's published format
   (test/reference/fixture_tokenizers.py), and compiles it with moec.
2. Completion: for each prompt, the executable's prompt ids (--tokenize) must decode
   back to the prompt; `-p PROMPT -n N` must print the prompt and then exactly the
   text of the PyTorch reference's greedy continuation under the family's default
   repetition penalty (both forms re-implemented here from their definitions), up to
   a stop token. Families whose default samples are run with --temp 0. A seeded
   sampled run is repeated and must print the same text.
3. Chat (families with a chat format): two user turns through a pipe, with the
   conversation built here from the family's template as its card writes it; each
   reply must be the reference's. Then the output rows of a stop token and of a
   token the reference writes mid-reply are swapped in the checkpoint, so the model
   now writes the stop token there: the executable's first reply must end just
   before it, and the second turn must carry on from that history.
4. Limits: a prompt longer than -c is refused with a message naming the context; a
   conversation that outgrows it drops its oldest turns and says so.

Prints one line per check and "N passed, N failed" last; exits 1 on any failure.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(os.path.dirname(HERE), "reference")
sys.path.insert(0, REFERENCE)

import families  # noqa: E402
import fixture_tokenizers  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402

PROMPTS = ["The quick brown fox", "In the beginning, 2026 words: Zürich!"]
GENERATE = 20
CHAT_TURNS = ["Hello, how are you today?", "What is a mixture of experts?"]
CHAT_REPLY = 12

# Per family: fixture options giving room for the tokenizer, the tokenizer writer,
# the template pieces (None: a base model), the stop token the chat check makes the
# model write, and compile/reference options. Moonlight is compiled dropless so that
# its prefill and decode are the same function of the sequence (its capacity rule
# is checked by family_e2e.py); here the text around the model is under test.
FAMILIES = {
    "physics": dict(fixture={"set": "vocab_size=2048"}, tokenizer="byte_level"),
    "linnet": dict(fixture={"sizes": {"vocab": 2048}}, tokenizer="byte_level"),
    "slimmoe": dict(fixture={"cfg_overrides": {"vocab_size": 2048}},
                    tokenizer="byte_level"),
    "ssmoelm": dict(fixture={"sizes": {"vocab_size": 500}}, tokenizer="byte_fallback",
                    stop_to_force="<eos>"),
    "moonlight": dict(fixture={"cfg_overrides": {"vocab_size": 50260, "ctx_size": 256}},
                      tokenizer="tiktoken", stop_to_force=50256,  # see mask_textless_outputs
                      compile=["--moe-dropless"], reference={"dropless": True}),
}

# The family descriptions' text sections, as the cards give them (frontends/families).
DEFAULTS = {
    "physics": dict(bos=None, stop=["<|endoftext|>"], penalty=None),
    "linnet": dict(bos="<|endoftext|>", stop=["<|endoftext|>"], penalty=None),
    "slimmoe": dict(bos=None, stop=["<|endoftext|>"], penalty=None),
    "ssmoelm": dict(bos="<bos>", stop=["<|eot|>", "<eos>"],
                    penalty=("sign_aware", 1.3, -1)),
    "moonlight": dict(bos=None, stop=[50256], penalty=("divide_by_count", 1.15, 10)),
}
SAMPLES_BY_DEFAULT = {"linnet", "slimmoe", "moonlight"}


class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def expect(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print("  ok  " + what)
        else:
            self.failed += 1
            print("FAIL " + what + ("\n     " + detail if detail else ""))


def run(cmd, stdin=None, check=True):
    # Bytes, decoded here: text mode would turn a generated "\r" into "\n".
    result = subprocess.run(cmd, input=stdin.encode() if stdin else None,
                            capture_output=True)
    result.stdout = result.stdout.decode("utf-8", errors="replace")
    result.stderr = result.stderr.decode("utf-8", errors="replace")
    if check and result.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s%s" % (
            result.returncode, " ".join(cmd), result.stdout, result.stderr))
    return result


def penalize(logits, history, penalty):
    """The two repetition-penalty forms, once per distinct token of the window:
    Hugging Face's sign-aware one (logit / p if positive, else * p), and Moonlight's
    logit / p^count (count: occurrences in the window)."""
    if penalty is None:
        return logits
    form, p, last_n = penalty
    window = history if last_n < 0 else history[-last_n:]
    logits = logits.clone()
    for token in set(window):
        if form == "sign_aware":
            logits[token] = logits[token] / p if logits[token] > 0 else logits[token] * p
        else:
            logits[token] = logits[token] / p ** window.count(token)
    return logits


def reference_reply(model, history, limit, stops, penalty, options):
    """Greedy tokens after `history` until a stop token (not included) or `limit`."""
    sequence, reply = list(history), []
    with torch.no_grad():
        while len(reply) < limit:
            logits = model.forward(sequence, **options)[-1].float()
            token = int(penalize(logits, sequence, penalty).argmax())
            if token in stops:
                return reply, True
            reply.append(token)
            sequence.append(token)
    return reply, False


class Fixture:
    def __init__(self, args, family_name, work):
        self.args = args
        self.name = family_name
        self.setup = FAMILIES[family_name]
        self.defaults = DEFAULTS[family_name]
        self.family = families.get(family_name)
        self.dir = os.path.join(work, "model")
        self.exe = os.path.join(work, "model.exe")
        self.family.write_checked_fixture(self.dir, "tiny", args.seed, [[1, 2, 3]],
                                          self.setup["fixture"])
        self.decoder = getattr(fixture_tokenizers, self.setup["tokenizer"])(self.dir)
        if self.name == "moonlight":
            mask_textless_outputs(self)
        self.compile()

    def compile(self):
        run([self.args.moec, "compile", self.dir, "-o", self.exe, "-q"]
            + self.setup.get("compile", []))
        self.model = self.family.load(self.dir)

    def token(self, ref):
        """An id, from a token's text or an id."""
        if isinstance(ref, int):
            return ref
        ids = [i for i, p in self.decoder.pieces.items() if p == ref.encode()]
        assert len(ids) == 1, ref
        return ids[0]

    def tokenize(self, text):
        """The executable's ids of `text` (without BOS)."""
        out = run([self.exe, "--tokenize", text]).stdout.strip()
        return [int(t) for t in out.split(",")] if out else []

    def stops(self):
        return {self.token(s) for s in self.defaults["stop"]}

    def greedy_flags(self):
        return ["--temp", "0"] if self.name in SAMPLES_BY_DEFAULT else []

    def reply(self, history, limit):
        return reference_reply(self.model, history, limit, self.stops(),
                               self.defaults["penalty"], self.setup.get("reference", {}))


def check_completion(fx, checks):
    for prompt in PROMPTS:
        ids = fx.tokenize(prompt)
        text = fx.decoder.decode(ids)
        if fx.setup["tokenizer"] == "byte_fallback":
            text = text[1:] if text.startswith(" ") else text  # the decoder's Strip
        checks.expect(text == prompt, "--tokenize %r: %d ids that decode back" %
                      (prompt, len(ids)), "decoded %r" % text)
        bos = fx.defaults["bos"]
        history = ([fx.token(bos)] if bos else []) + ids
        reply, stopped = fx.reply(history, GENERATE)
        want = prompt + fx.decoder.decode(reply) + "\n"
        got = run([fx.exe, "-p", prompt, "-n", str(GENERATE)] + fx.greedy_flags()).stdout
        checks.expect(got == want, "-p %r: the reference's %d greedy tokens%s" % (
            prompt, len(reply), " and its stop token" if stopped else ""),
            "got  %r\n     want %r" % (got, want))
    sampled = [fx.exe, "-p", PROMPTS[0], "-n", str(GENERATE), "--temp", "0.8",
               "--top-k", "10", "-s", "5"]
    first, second = run(sampled).stdout, run(sampled).stdout
    checks.expect(first == second and len(first) > len(PROMPTS[0]) + 1,
                  "-s 5 --temp 0.8 --top-k 10 twice: the same text",
                  "%r vs %r" % (first, second))


def chat_pieces(fx, parts):
    """Token ids of template parts: token texts/ids as they are, text through the
    executable's tokenizer (each part on its own, as the format's parts are)."""
    ids = []
    for kind, value in parts:
        ids += [fx.token(value)] if kind == "token" else fx.tokenize(value)
    return ids


def conversation_template(fx, system):
    """(head, user turn, end of a reply) as functions of the text, from the cards:
    SSMoELM <bos><|user|>\\n{u}<|eot|>\\n<|assistant|>\\n{reply}<|eot|>\\n, an
    optional <|system|>\\n{s}<|eot|>\\n after <bos>; Moonlight [SYSTEM] s [USER] u
    [ASSISTANT] {reply} with earlier replies not closed, and its default system."""
    if fx.name == "ssmoelm":
        head = chat_pieces(fx, [("token", "<bos>")])
        if system:
            head += chat_pieces(fx, [("token", "<|system|>"), ("text", "\n"),
                                     ("text", system), ("token", "<|eot|>"), ("text", "\n")])
        user = lambda u: chat_pieces(fx, [("token", "<|user|>"), ("text", "\n"), ("text", u),
                                          ("token", "<|eot|>"), ("text", "\n"),
                                          ("token", "<|assistant|>"), ("text", "\n")])
        end = chat_pieces(fx, [("token", "<|eot|>"), ("text", "\n")])
        return head, user, end
    system = system or ("You are a helpful, accurate, and concise AI assistant. Follow "
                        "instructions precisely. If you're unsure, say so.")
    head = [50257] + fx.tokenize(system)
    return head, (lambda u: [50258] + fx.tokenize(u) + [50259]), []


def expected_chat(fx, system):
    """The replies the reference writes, each after the whole conversation so far."""
    head, user, end = conversation_template(fx, system)
    history, replies = list(head), []
    for turn in CHAT_TURNS:
        history += user(turn)
        reply, _ = fx.reply(history, CHAT_REPLY)
        replies.append(reply)
        history += reply + end
    return replies, head, user


def run_chat(fx, system=None):
    cmd = [fx.exe, "--chat", "-n", str(CHAT_REPLY)] + fx.greedy_flags()
    if system:
        cmd += ["--system", system]
    return run(cmd, stdin="".join(t + "\n" for t in CHAT_TURNS)).stdout


def check_chat(fx, checks, label, system=None):
    replies, _, _ = expected_chat(fx, system)
    want = "".join(fx.decoder.decode(r) + "\n" for r in replies)
    got = run_chat(fx, system)
    checks.expect(got == want, "--chat %s: %s replies as the reference" % (
        label, "/".join(str(len(r)) for r in replies)), "got  %r\n     want %r" % (got, want))
    return replies


def swap_output_rows(fx, a, b):
    """Swaps the output rows (tied embedding rows, and a head bias) of tokens a and b
    in the checkpoint, in its own format: the model then writes a where it wrote b."""
    if fx.name == "ssmoelm":
        path = os.path.join(fx.dir, "model.safetensors")
        tensors, metadata = read_safetensors(path, return_metadata=True)
        codes_key = next(k for k in tensors if k.endswith("embed_tokens.weight__int4"))
        scale_key = codes_key.replace("__int4", "__scale")
        row_bytes = tensors[codes_key].numel() // tensors[scale_key].shape[0]
        codes = tensors[codes_key].view(-1, row_bytes).clone()
        codes[[a, b]] = codes[[b, a]]
        tensors[codes_key] = codes.reshape(-1)
        scales = tensors[scale_key].clone()
        scales[[a, b]] = scales[[b, a]]
        tensors[scale_key] = scales
        write_safetensors(path, tensors, metadata=metadata)
    else:
        path = os.path.join(fx.dir, "model.pt")
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        done = set()  # tok_emb.weight and lm_head.weight share one storage
        for key, value in moonlight_state(checkpoint).items():
            if key.endswith(("tok_emb.weight", "lm_head.weight", "lm_head.bias")) and \
                    value.data_ptr() not in done:
                done.add(value.data_ptr())
                value[[a, b]] = value[[b, a]].clone()
        torch.save(checkpoint, path)


def moonlight_state(checkpoint):
    return checkpoint["model"] if "model" in checkpoint else checkpoint


def mask_textless_outputs(fx):
    """Moonlight's vocabulary is GPT-2's (50257 + roles) and the fixture tokenizer has
    2048 ids: a head bias of -1e4 on the ids between keeps a random model writing
    text, as a trained one would (its embedding, tied, is untouched)."""
    path = os.path.join(fx.dir, "model.pt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    for key, value in moonlight_state(checkpoint).items():
        if key.endswith("lm_head.bias"):
            first = max(i for i in fx.decoder.pieces if i not in fx.decoder.special) + 1
            value[first:min(fx.decoder.special)] = -1e4
    torch.save(checkpoint, path)


def check_forced_stop(fx, checks):
    """Makes the model write the stop token mid-reply; the reply must end there."""
    replies, head, user = expected_chat(fx, None)
    first = replies[0]
    prompt = set(head + user(CHAT_TURNS[0]))
    stop = fx.token(fx.setup["stop_to_force"])
    special = fx.decoder.special
    # A reply of at least two tokens before the stop, where one is possible.
    candidates = [i for i in range(1, len(first)) if first[i] not in prompt
                  and first[i] not in first[:i] and first[i] not in special]
    k = next((i for i in candidates if i >= 2), candidates[0] if candidates else None)
    if k is None:
        checks.expect(False, "forced stop: no token of the first reply can carry it",
                      "reply %s" % first)
        return
    swap_output_rows(fx, stop, first[k])
    fx.compile()
    changed, _, _ = expected_chat(fx, None)
    checks.expect(changed[0] == first[:k],
                  "forced stop: the reference now stops after %d tokens" % k,
                  "reference reply %s, expected %s" % (changed[0], first[:k]))
    check_chat(fx, checks, "with token %d's row swapped for stop token %d" % (first[k], stop))


def check_limits(fx, checks):
    long_prompt = " ".join(["the quick brown fox jumps over the lazy dog"] * 12)
    result = run([fx.exe, "-p", long_prompt, "-c", "32"], check=False)
    checks.expect(result.returncode == 1 and "context holds 32" in result.stderr
                  and "Traceback" not in result.stderr and result.stdout == "",
                  "-p beyond -c 32: refused, naming the context",
                  "rc %d, stderr %r" % (result.returncode, result.stderr))
    turns = "".join("message number %d about the sea and the ships\n" % i for i in range(8))
    result = run([fx.exe, "--chat", "-c", "64", "-n", "4"] + fx.greedy_flags(),
                 stdin=turns, check=False)
    checks.expect(result.returncode == 0 and "oldest turns were dropped" in result.stderr
                  and result.stdout.count("\n") == 8,
                  "--chat beyond -c 64: the oldest turns dropped, every turn answered",
                  "rc %d, stderr %r" % (result.returncode, result.stderr))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--family", required=True, choices=sorted(FAMILIES))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="moec-text-")
    checks = Checks()
    try:
        fx = Fixture(args, args.family, work)
        print("fixture: %s, tokenizer %s (%d ids)" % (args.family, fx.setup["tokenizer"],
                                                      fx.decoder.size))
        check_completion(fx, checks)
        check_limits(fx, checks)
        if "stop_to_force" in fx.setup:
            check_chat(fx, checks, "(the default system turn)" if fx.name == "moonlight"
                       else "(no system turn)")
            if fx.name == "ssmoelm":
                check_chat(fx, checks, "--system", system="You are terse.")
            check_forced_stop(fx, checks)
    finally:
        if args.keep:
            print("kept " + work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed (--family=%s)" % (checks.passed, checks.failed, args.family))
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
