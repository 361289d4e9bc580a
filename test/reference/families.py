#!/usr/bin/python3
"""The seed families as the end-to-end tests see them: one uniform interface over
each family's reference module.

    fam = families.get("moonlight")
    seed = fam.write_checked_fixture(out_dir, preset, seed, prompts, options)
    model = fam.load(out_dir)            # .vocab, .forward(tokens), .decode(tokens)
    reply = families.greedy_reply(model, prompt, n, stops, penalty)   # text generation

write_checked_fixture retries seeds until every prompt routes with a top-k margin of
at least MARGIN (and, with a capacity rule, a gap of at least CAPACITY_GAP at the
capacity boundary), so a float rounding difference between the compiled model and the
reference cannot flip an expert choice. It returns the seed it used. The prompts may be
a function of the written model (a prompt and the model's own continuation), and a
`finish` step may complete each checkpoint (a tokenizer beside it) before the check.
"""
from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

# Margins are differences of router scores (probabilities or logits); the
# compiled model's scores differ from the reference's by ~1e-6.
MARGIN = 1e-4
CAPACITY_GAP = 1e-4
MAX_TRIES = 50


class Family:
    def __init__(self, name: str, module: str):
        self.name = name
        self.module_name = module

    @property
    def module(self):
        return importlib.import_module(self.module_name)

    def load(self, model_dir: str, **options):
        """`options`: the reference's own (SSMoELM: int8_activations=32)."""
        return self.module.Model.from_dir(model_dir, **options)

    def write_fixture(self, out_dir: str, preset: str, seed: int, options: Dict) -> None:
        self.module.write_fixture(out_dir, preset=preset, seed=seed, **options)

    def routing_ok(self, model, token_lists: Sequence[Sequence[int]],
                   dropless: bool = False) -> bool:
        """Every token of every list (one prefill call each) routes with margins; with
        `dropless`, as the model routes without a capacity rule (as in decode)."""
        margins = self.module.min_margins(model, token_lists)
        if dropless:
            return margins.get("topk_margin_dropless", margins["topk_margin"]) >= MARGIN
        return (margins["topk_margin"] >= MARGIN
                and margins.get("capacity_gap", math.inf) >= CAPACITY_GAP)

    def write_checked_fixture(self, out_dir: str, preset: str, seed: int, prompts,
                              options: Dict, finish: Optional[Callable] = None) -> int:
        """`prompts`: token lists, or a function of the loaded model that returns them
        (e.g. each prompt followed by the model's own reply), or None to reject the seed.
        `finish(out_dir)` completes each written checkpoint before it is loaded (e.g.
        adds a tokenizer, or edits a weight the prompts' continuations depend on)."""
        for attempt in range(MAX_TRIES):
            self.write_fixture(out_dir, preset, seed + attempt, options)
            if finish:
                finish(out_dir)
            model = self.load(out_dir)
            token_lists = prompts(model) if callable(prompts) else prompts
            if token_lists is not None and self.routing_ok(model, token_lists):
                return seed + attempt
        raise RuntimeError("%s: no seed in [%d, %d) routes the prompts with a top-k margin "
                           "of %g" % (self.name, seed, seed + MAX_TRIES, MARGIN))


class PhysicsFamily(Family):
    """The physics fixture writer has its own CLI with the margin check built in (which
    also requires the router bias to change a selection); prompts that are a function of
    the model, or a `finish` step, are checked here with its margin."""

    def load(self, model_dir: str):
        return self.module.PhysicsModel.from_dir(model_dir)

    def write_fixture(self, out_dir: str, preset: str, seed: int, options: Dict) -> None:
        self._make_fixture(out_dir, preset, seed, options, None)

    def routing_ok(self, model, token_lists, dropless=False) -> bool:
        import make_fixture  # dropless: its MoE has no capacity rule
        return make_fixture.check_routing(model, token_lists)["min_margin"] >= \
            make_fixture.MARGIN_MIN

    def write_checked_fixture(self, out_dir, preset, seed, prompts, options,
                              finish=None) -> int:
        if callable(prompts) or finish:
            return super().write_checked_fixture(out_dir, preset, seed, prompts, options,
                                                 finish)
        return self._make_fixture(out_dir, preset, seed, options, prompts)

    @staticmethod
    def _make_fixture(out_dir, preset, seed, options, check_tokens) -> int:
        cmd = [sys.executable, os.path.join(_HERE, "make_fixture.py"), "--out", out_dir,
               "--preset", preset, "--seed", str(seed)]
        if check_tokens is not None:
            cmd += ["--check-tokens", ";".join(",".join(map(str, p)) for p in check_tokens)]
        for key, value in options.items():
            cmd += ["--" + key.replace("_", "-"), str(value)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("seed "):
                return int(line.split()[1])
        raise RuntimeError("make_fixture.py printed no seed:\n" + out)


FAMILIES: Dict[str, Family] = {
    "physics": PhysicsFamily("physics", "physics_model"),
    "slimmoe": Family("slimmoe", "slimmoe_model"),
    "moonlight": Family("moonlight", "moonlight_model"),
    "linnet": Family("linnet", "linnet_model"),
    "ssmoelm": Family("ssmoelm", "ssmoelm_model"),
}


def get(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError("unknown family %r (known: %s)" % (name, ", ".join(FAMILIES)))
    return FAMILIES[name]


def parse_prompts(text: str) -> List[List[int]]:
    """Prompts separated by '/' (a ';' does not survive CMake), ids by ','."""
    return [[int(t) for t in p.split(",")] for p in text.split("/")]


def greedy(model, tokens: Sequence[int], n: int, **options) -> List[int]:
    """n greedy tokens after `tokens`: the reference's own generate when it has one
    (Moonlight: prefill with the capacity rule, then cached decode), else argmax of a
    fresh prefill over the growing sequence (the same thing for a dropless model)."""
    if hasattr(model, "generate"):
        return model.generate(list(tokens), n, **options)
    sequence = list(tokens)
    for _ in range(n):
        sequence.append(int(model.forward(sequence, **options)[-1].argmax()))
    return sequence[len(tokens):]


def repeat_penalty(logits: torch.Tensor, history: Sequence[int], penalty) -> torch.Tensor:
    """`logits` after a repetition penalty over `history` (the whole text so far, prompt
    included), as the families' generate functions define it. `penalty`: None, or
    (form, p, last_n) with last_n -1 for the whole history; once per distinct token of
    the window, form "sign_aware" (Hugging Face's: logit / p if positive, else * p) or
    "divide_by_count" (Moonlight's GPTMoE.generate: logit / p ** count in the window,
    whatever the sign)."""
    if penalty is None:
        return logits
    form, p, last_n = penalty
    window = list(history) if last_n < 0 else list(history)[-last_n:]
    logits = logits.clone()
    for token in set(window):
        if form == "sign_aware":
            logits[token] = logits[token] / p if logits[token] > 0 else logits[token] * p
        elif form == "divide_by_count":
            logits[token] = logits[token] / p ** window.count(token)
        else:
            raise ValueError("unknown repetition penalty form %r" % form)
    return logits


class Reply(NamedTuple):
    ids: List[int]   # the tokens before the stop token
    stopped: bool    # a stop token ended it (else the limit)
    gap: float       # smallest (best - second best) / max(1, |best|) of a choice


def _next_logits(model, tokens: Sequence[int], limit: int, options: Dict):
    """A generator of the logits after `tokens`, then after each token sent to it: one
    prefill over `tokens` and then, for a model whose prefill has a capacity rule (its
    own generate: Moonlight), one token at a time through its KV cache, as the
    publisher's generate; otherwise a prefill of the grown sequence (for a dropless
    model the same function of it)."""
    if hasattr(model, "generate") and not options.get("dropless"):
        cache = model.new_cache(len(tokens) + limit)
        token = yield model.forward(list(tokens), cache=cache, **options)[-1]
        while True:
            token = yield cache.step(token)
    sequence = list(tokens)
    while True:
        sequence.append((yield model.forward(sequence, **options)[-1]))


def greedy_reply(model, tokens: Sequence[int], limit: int, stops=(), penalty=None,
                 **options) -> Reply:
    """Greedy tokens after `tokens` under a repetition penalty (see repeat_penalty), up
    to a stop token (not included) or `limit` tokens. The gap says how safely each
    choice was made, relative to the best logit (not to the row's range, which a
    masked logit can make huge)."""
    history, reply, gap = list(tokens), [], math.inf
    logits_after = _next_logits(model, tokens, limit, options)
    with torch.no_grad():
        logits = next(logits_after)
        while len(reply) < limit:
            row = repeat_penalty(logits.float(), history, penalty)
            top = torch.topk(row, 2).values
            gap = min(gap, float(top[0] - top[1]) / max(1.0, abs(float(top[0]))))
            token = int(row.argmax())
            if token in stops:
                return Reply(reply, True, gap)
            reply.append(token)
            history.append(token)
            if len(reply) < limit:
                logits = logits_after.send(token)
    return Reply(reply, False, gap)
