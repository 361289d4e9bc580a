#!/usr/bin/python3
"""End-to-end text test of one family: text in, text out, as the reference would.

1. Writes a random-weight fixture of --family (test/reference/families.py) with a
   vocabulary that holds a tokenizer in the family's published format beside it
   (test/reference/fixture_tokenizers.py), and compiles it with moec. The seed is
   checked on what the test will run: every prompt and conversation, with the
   reference's own replies, must route with top-k margins, and every greedy choice
   must win by a margin rounding cannot close.
2. Completion: for each prompt, the executable's prompt ids (--tokenize) must decode
   back to the prompt; `-p PROMPT -n N` must print the prompt and then exactly the
   text of the PyTorch reference's greedy continuation (BOS first where the family
   adds one) under the family's default repetition penalty, up to a stop token.
   Families whose default samples are run with --temp 0 and their other defaults. A
   seeded sampled run is repeated and must print the same text.
3. Chat: two user lines through a pipe; for SSMoELM and Moonlight the conversation is
   built here from the family's template as its card writes it (with and without a
   system turn), for a base model it is the text itself; each reply must be the
   reference's after the whole conversation so far. Then (chat formats) the output
   rows of a stop token and of a token the reference writes mid-reply are swapped in
   the checkpoint, so the model writes the stop token there: the executable's first
   reply must end just before it, and the second turn carry on from that history.
4. Limits: a prompt longer than -c is refused with a message naming the context; a
   conversation that outgrows it drops its oldest turns, says so and goes on.

Moonlight's prefill has a capacity rule, which applies per prefill call: -p and the
chats run the default executable against the reference as the publisher's generate
runs (the whole prompt or conversation in one prefill call, then cached decode),
which is what the executable does, re-prefilling a conversation every turn. The
context-overflow chat (8 turns) runs an executable compiled --moe-dropless against
the dropless reference: no seed routes 8 long prefills with capacity margins.

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

PROMPTS = ["The quick brown fox", "In the beginning, 2026 words: Zürich!",
           "We met at the café; 3 + 4 = 7?"]
GENERATE = 24
CHAT_TURNS = ["Hello, how are you today?", "What is a mixture of experts?"]
CHAT_REPLY = 12
SYSTEM = "You are terse."
OVERFLOW_TURNS = ["the sea is calm, %d ships sail" % i for i in range(8)]
OVERFLOW_ROOM, OVERFLOW_REPLY = 48, 4
# A greedy choice is safe when the best (penalised) logit beats the second by this
# fraction of itself (at least 1): the executable's logits are ~1e-6 from the
# reference's (family_e2e.py holds them to 1e-4 of a row's range).
GREEDY_GAP = 3e-4
# The byte-level tokenizers have 513-514 ids; the model a few more, without text.
TEXT_VOCAB = 576

# Per family: fixture options giving room for the tokenizer, the tokenizer writer and
# its options (the publisher's layout: the tokenizers trainer puts special tokens
# first, GPT-2 last), the stop token the chat check makes the model write,
# whether the context-overflow chat runs dropless (see the docstring), and the
# seed the search starts from where the first seeds are known to be rejected.
FAMILIES = {
    "physics": dict(fixture={"set": "vocab_size=%d" % TEXT_VOCAB},
                    tokenizer=("byte_level", {"specials_first": True})),
    "linnet": dict(fixture={"sizes": {"vocab": TEXT_VOCAB}},
                   tokenizer=("byte_level", {"specials": ["<|endoftext|>", "<|padding|>"],
                                             "specials_first": True})),
    "slimmoe": dict(fixture={"cfg_overrides": {"vocab_size": TEXT_VOCAB}},
                    tokenizer=("byte_level", {})),
    "ssmoelm": dict(fixture={"sizes": {"vocab_size": TEXT_VOCAB}},
                    tokenizer=("byte_fallback", {}), stop_to_force="<eos>"),
    "moonlight": dict(fixture={"cfg_overrides": {"vocab_size": 50260, "ctx_size": 256}},
                      tokenizer=("tiktoken", {}), stop_to_force=50256,
                      overflow_dropless=True,
                      # Seeds 1-15 fail the margin or routing checks; each
                      # costs about 15 s of the reference (4 minutes a run).
                      first_seed=16),
}

# The text defaults as the cards and specs give them (not read from
# frontends/families, which is what is under test): BOS, stop tokens, temperature,
# repetition penalty (form, p, window; -1: the whole text), chat format.
DEFAULTS = {
    "physics": dict(bos=None, stop=["<|endoftext|>"], temperature=0, penalty=None),
    "linnet": dict(bos="<|endoftext|>", stop=["<|endoftext|>"], temperature=1.0,
                   penalty=None),
    "slimmoe": dict(bos=None, stop=["<|endoftext|>"], temperature=1.0, penalty=None),
    "ssmoelm": dict(bos="<bos>", stop=["<|eot|>", "<eos>"], temperature=0,
                    penalty=("sign_aware", 1.3, -1), chat="ssmoelm"),
    "moonlight": dict(bos=None, stop=[50256], temperature=0.7,
                      penalty=("divide_by_count", 1.15, 10), chat="moonlight"),
}
MOONLIGHT_DEFAULT_SYSTEM = ("You are a helpful, accurate, and concise AI assistant. "
                            "Follow instructions precisely. If you're unsure, say so.")


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


class Fixture:
    """The checkpoint, its tokenizer, its executables, and what the reference says
    they must print (computed while choosing the seed)."""

    def __init__(self, args, family_name, work):
        self.args = args
        self.name = family_name
        self.setup = FAMILIES[family_name]
        self.defaults = DEFAULTS[family_name]
        self.family = families.get(family_name)
        self.dir = os.path.join(work, "model")
        self.exe = os.path.join(work, "model.exe")
        self.overflow_exe = os.path.join(work, "dropless.exe") \
            if self.setup.get("overflow_dropless") else self.exe
        self.overflow_options = {"dropless": True} if self.setup.get("overflow_dropless") \
            else {}
        self.ids_of = {}  # text -> ids: the tokenizer is the same for every seed
        self.seed = self.family.write_checked_fixture(
            self.dir, "tiny", args.seed, self.expect, self.setup["fixture"],
            finish=self.add_tokenizer)
        self.compile()

    def add_tokenizer(self, out_dir):
        writer, options = self.setup["tokenizer"]
        self.decoder = getattr(fixture_tokenizers, writer)(out_dir, **options)
        if self.name == "moonlight":
            mask_textless_outputs(self)

    def compile(self):
        run([self.args.moec, "compile", self.dir, "-o", self.exe, "-q"])
        if self.overflow_exe != self.exe:
            run([self.args.moec, "compile", self.dir, "-o", self.overflow_exe, "-q",
                 "--moe-dropless"])

    def token(self, ref):
        """An id, from a token's text or an id."""
        if isinstance(ref, int):
            return ref
        ids = [i for i, p in self.decoder.pieces.items() if p == ref.encode()]
        assert len(ids) == 1, ref
        return ids[0]

    def tokenize(self, text):
        """moec's ids of `text` (without BOS); the executable's are checked to agree."""
        if text not in self.ids_of:
            out = run([self.args.moec, "tokenize", self.dir, text]).stdout.strip()
            self.ids_of[text] = [int(t) for t in out.split(",")] if out else []
        return self.ids_of[text]

    def prompt_ids(self, prompt):
        bos = self.defaults["bos"]
        return ([self.token(bos)] if bos else []) + self.tokenize(prompt)

    def greedy_flags(self):
        return ["--temp", "0"] if self.defaults["temperature"] != 0 else []

    def reply(self, model, history, limit, options):
        stops = {self.token(s) for s in self.defaults["stop"]}
        return families.greedy_reply(model, history, limit, stops, self.defaults["penalty"],
                                     **options)

    def expect(self, model):
        """What every check must see, from `model`. Returns the prompts (each prefilled
        in one call) for write_checked_fixture's routing check, or None to reject the
        seed: when a greedy choice is too close to call, or when a token the executable
        runs after its prompt's prefill (a reply; a chat turn) routes without margins,
        which is checked here without the capacity rule (no capacity rule sees them)."""
        self.completions = {p: self.reply(model, self.prompt_ids(p), GENERATE, {})
                            for p in PROMPTS}
        decoded = [self.prompt_ids(p) + r.ids for p, r in self.completions.items()]
        # Each chat turn prefills the conversation so far in one call.
        prefills = [self.prompt_ids(p) for p in PROMPTS]
        self.chats = {}
        for system in (None, SYSTEM) if self.defaults.get("chat") else (None,):
            self.chats[system], seen = expected_chat(self, model, system)
            decoded += seen
            prefills += [c[:len(c) - len(r.ids)] for c, r in zip(seen, self.chats[system])]
        self.overflow, seen = expected_chat(self, model, None, OVERFLOW_TURNS,
                                            OVERFLOW_REPLY, self.overflow_context(),
                                            self.overflow_options)
        decoded += seen
        replies = list(self.completions.values()) + self.overflow
        replies += [r for chat in self.chats.values() for r in chat]
        if min(r.gap for r in replies) < GREEDY_GAP or \
                not self.family.routing_ok(model, decoded, dropless=True):
            return None
        return prefills

    def overflow_context(self):
        """The overflow check's context: the conversation's head and 48 tokens, which
        a few of its lines outgrow."""
        return len(conversation(self, None)[0]) + OVERFLOW_ROOM


def check_completion(fx, checks):
    for prompt in PROMPTS:
        ids = [int(t) for t in run([fx.exe, "--tokenize", prompt]).stdout.strip().split(",")]
        text = fx.decoder.decode(ids, at_start=True)
        checks.expect(ids == fx.tokenize(prompt) and text == prompt,
                      "--tokenize %r: %d ids that decode back" % (prompt, len(ids)),
                      "ids %s (moec tokenize: %s), decoded %r" % (ids, fx.tokenize(prompt),
                                                                  text))
        reply = fx.completions[prompt]
        # The executable prints the prompt, then the continuation, then a newline.
        want = prompt + fx.decoder.decode(reply.ids) + "\n"
        got = run([fx.exe, "-p", prompt, "-n", str(GENERATE)] + fx.greedy_flags()).stdout
        checks.expect(got == want, "-p %r: the reference's %d greedy tokens%s" % (
            prompt, len(reply.ids), " and its stop token" if reply.stopped else ""),
            "got  %r\n     want %r" % (got, want))
    sampled = [fx.exe, "-p", PROMPTS[0], "-n", str(GENERATE), "--temp", "0.8",
               "--top-k", "10", "-s", "5"]
    first, second = run(sampled).stdout, run(sampled).stdout
    checks.expect(first == second and len(first) > len(PROMPTS[0]) + 1,
                  "-s 5 --temp 0.8 --top-k 10 twice: the same text",
                  "%r vs %r" % (first, second))


def conversation(fx, system):
    """(head, user turn as a function of its text, end of a reply), as the cards write
    the templates. SSMoELM: <bos>, an optional <|system|>\\n{s}<|eot|>\\n, each
    exchange <|user|>\\n{u}<|eot|>\\n<|assistant|>\\n{reply}<|eot|>\\n. Moonlight:
    [SYSTEM] {s} (its default system text unless one is given), [USER] {u}
    [ASSISTANT] {reply}, earlier replies not closed by EOT. A base model: BOS where the
    family adds one, then the text of each line and each reply as it comes. Each text
    part is tokenized on its own (the families' descriptions list them as parts)."""
    token, text = fx.token, fx.tokenize
    chat = fx.defaults.get("chat")
    if chat == "ssmoelm":
        head = [token("<bos>")]
        if system:
            head += [token("<|system|>")] + text("\n") + text(system) + \
                [token("<|eot|>")] + text("\n")
        end = [token("<|eot|>")] + text("\n")
        return head, (lambda u: [token("<|user|>")] + text("\n") + text(u) + end
                      + [token("<|assistant|>")] + text("\n")), end
    if chat == "moonlight":
        head = [50257] + text(system or MOONLIGHT_DEFAULT_SYSTEM)
        return head, (lambda u: [50258] + text(u) + [50259]), []
    return [token(fx.defaults["bos"])] if fx.defaults["bos"] else [], text, []


def expected_chat(fx, model, system, turns=CHAT_TURNS, limit=CHAT_REPLY, context=None,
                  options=None):
    """The reference's replies, each after the conversation so far, and every
    conversation a reply was written after (with the reply). With a `context`, the
    oldest exchanges (a line and its reply) are dropped whenever a line and its
    reply's room (`limit`, as the executable reserves -n) would outgrow it; the head
    (BOS, system turn) always stays."""
    head, user, end = conversation(fx, system)
    exchanges, replies, seen = [], [], []
    for turn in turns:
        current = user(turn)
        while context and exchanges and \
                len(head) + sum(map(len, exchanges)) + len(current) + limit > context:
            exchanges.pop(0)
        history = head + [t for e in exchanges for t in e] + current
        replies.append(fx.reply(model, history, limit, options or {}))
        exchanges.append(current + replies[-1].ids + end)
        seen.append(history + replies[-1].ids)
    return replies, seen


def run_chat(fx, system=None):
    cmd = [fx.exe, "--chat", "-n", str(CHAT_REPLY)] + fx.greedy_flags()
    if system:
        cmd += ["--system", system]
    return run(cmd, stdin="".join(t + "\n" for t in CHAT_TURNS)).stdout


def check_chat(fx, checks, label, system, replies):
    want = "".join(fx.decoder.decode(r.ids) + "\n" for r in replies)
    got = run_chat(fx, system)
    checks.expect(got == want, "--chat %s: %s-token replies as the reference" % (
        label, "/".join(str(len(r.ids)) for r in replies)),
        "got  %r\n     want %r" % (got, want))


def swap_output_rows(fx, a, b):
    """Swaps the output rows (tied embedding rows, and a head bias) of tokens a and b
    in the checkpoint, in its own format: the model then writes a where it wrote b."""
    if fx.name == "ssmoelm":
        # Packed 4-bit codes, a whole number of bytes per row, and one scale per row.
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
        for key, value in checkpoint["model"].items():
            if key.endswith(("tok_emb.weight", "lm_head.weight", "lm_head.bias")) and \
                    value.data_ptr() not in done:
                done.add(value.data_ptr())
                value[[a, b]] = value[[b, a]].clone()
        torch.save(checkpoint, path)


def mask_textless_outputs(fx):
    """Moonlight's vocabulary is GPT-2's (50257 + roles) and the fixture tokenizer has a
    few hundred ids: a head bias of -1e4 on the ids between keeps a random model
    writing text, as a trained one would (its embedding, tied, is untouched)."""
    path = os.path.join(fx.dir, "model.pt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    for key, value in checkpoint["model"].items():
        if key.endswith("lm_head.bias"):
            first = max(i for i in fx.decoder.pieces if i not in fx.decoder.special) + 1
            value[first:min(fx.decoder.special)] = -1e4
    torch.save(checkpoint, path)


def force_stop(fx):
    """Swaps the output rows of the stop token and of g_k, a token of the reference's
    first reply g_1..g_n (k >= 2) absent from everything before it, so that the model
    writes the stop token at step k; the first k for which the reference then stops
    there and writes a second reply of two tokens or more, with margins. Returns
    (k, g_k, the reference's replies), or None."""
    first = fx.chats[None][0].ids
    head, user, _ = conversation(fx, None)
    before = set(head + user(CHAT_TURNS[0]))
    stop = fx.token(fx.setup["stop_to_force"])
    for k in range(2, len(first)):
        token = first[k]
        if token in before or token in first[:k] or token in fx.decoder.special \
                or token not in fx.decoder.pieces:  # text that the reply would print
            continue
        swap_output_rows(fx, stop, token)
        model = fx.family.load(fx.dir)
        replies, seen = expected_chat(fx, model, None)
        if (replies[0].ids == first[:k] and replies[0].stopped and len(replies[1].ids) >= 2
                and min(r.gap for r in replies) >= GREEDY_GAP
                and fx.family.routing_ok(model, seen, dropless=True)
                and fx.family.routing_ok(model, [c[:len(c) - len(r.ids)]
                                                 for c, r in zip(seen, replies)])):
            return k, token, replies
        swap_output_rows(fx, stop, token)  # back
    return None


def check_forced_stop(fx, checks):
    forced = force_stop(fx)
    if forced is None:
        checks.expect(False, "forced stop: no token of the first reply can carry it",
                      "reply %s" % fx.chats[None][0].ids)
        return
    k, token, replies = forced
    print("      token %d's output row swapped with stop token %s's: the reference now "
          "stops after %d tokens" % (token, fx.setup["stop_to_force"], k))
    fx.compile()
    check_chat(fx, checks, "with the forced stop", None, replies)


def check_limits(fx, checks):
    long_prompt = " ".join(["the quick brown fox jumps over the lazy dog"] * 12)
    result = run([fx.exe, "-p", long_prompt, "-c", "32"], check=False)
    checks.expect(result.returncode == 1 and "context holds 32" in result.stderr
                  and "-c/--ctx-size" in result.stderr and result.stdout == "",
                  "-p beyond -c 32: refused, naming the context",
                  "rc %d, stdout %r, stderr %r" % (result.returncode, result.stdout,
                                                   result.stderr))
    context = fx.overflow_context()
    result = run([fx.overflow_exe, "--chat", "-c", str(context), "-n", str(OVERFLOW_REPLY)]
                 + fx.greedy_flags(), stdin="".join(t + "\n" for t in OVERFLOW_TURNS),
                 check=False)
    want = "".join(fx.decoder.decode(r.ids) + "\n" for r in fx.overflow)
    checks.expect(result.returncode == 0 and result.stdout == want
                  and "oldest turns were dropped to fit the context of %d" % context
                  in result.stderr,
                  "--chat beyond -c %d: whole exchanges dropped, and all %d replies the "
                  "reference's" % (context, len(fx.overflow)),
                  "rc %d, stdout %r (want %r), stderr %r" % (
                      result.returncode, result.stdout, want, result.stderr))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--family", required=True, choices=sorted(FAMILIES))
    ap.add_argument("--seed", type=int,
                    help="the first seed to try (default: the family's first_seed, or 1)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="moec-text-")
    checks = Checks()
    try:
        if args.seed is None:
            args.seed = FAMILIES[args.family].get("first_seed", 1)
        fx = Fixture(args, args.family, work)
        print("fixture: %s seed %d, tokenizer %s (%d ids)" % (
            args.family, fx.seed, fx.setup["tokenizer"][0], fx.decoder.size))
        check_completion(fx, checks)
        check_limits(fx, checks)
        if fx.defaults.get("chat"):
            default = "the default system turn" if fx.name == "moonlight" else "no system turn"
            check_chat(fx, checks, "(%s)" % default, None, fx.chats[None])
            check_chat(fx, checks, "--system %r" % SYSTEM, SYSTEM, fx.chats[SYSTEM])
            check_forced_stop(fx, checks)
        else:
            check_chat(fx, checks, "(a base model: the text continues)", None,
                       fx.chats[None])
    finally:
        if args.keep:
            print("kept " + work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed (--family=%s)" % (checks.passed, checks.failed, args.family))
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
