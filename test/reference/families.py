#!/usr/bin/python3
"""The seed families as the end-to-end tests see them: one uniform interface over
each family's reference module.

    fam = families.get("moonlight")
    seed = fam.write_checked_fixture(out_dir, preset, seed, prompts, options)
    model = fam.load(out_dir)            # .vocab, .forward(tokens), .decode(tokens)

write_checked_fixture retries seeds until every prompt routes with a top-k margin of
at least MARGIN (and, with a capacity rule, a gap of at least CAPACITY_GAP at the
capacity boundary), so a float rounding difference between the compiled model and the
reference cannot flip an expert choice. It returns the seed it used.
"""
from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
from typing import Dict, List, Sequence

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

    def load(self, model_dir: str):
        return self.module.Model.from_dir(model_dir)

    def write_fixture(self, out_dir: str, preset: str, seed: int, options: Dict) -> None:
        self.module.write_fixture(out_dir, preset=preset, seed=seed, **options)

    def write_checked_fixture(self, out_dir: str, preset: str, seed: int,
                              prompts: Sequence[Sequence[int]], options: Dict) -> int:
        for attempt in range(MAX_TRIES):
            self.write_fixture(out_dir, preset, seed + attempt, options)
            margins = self.module.min_margins(self.load(out_dir), prompts)
            if (margins["topk_margin"] >= MARGIN
                    and margins.get("capacity_gap", math.inf) >= CAPACITY_GAP):
                return seed + attempt
        raise RuntimeError("%s: no seed in [%d, %d) routes the prompts with a top-k margin "
                           "of %g" % (self.name, seed, seed + MAX_TRIES, MARGIN))


class PhysicsFamily(Family):
    """The physics fixture writer has its own CLI with the margin check built in."""

    def load(self, model_dir: str):
        return self.module.PhysicsModel.from_dir(model_dir)

    def write_checked_fixture(self, out_dir, preset, seed, prompts, options) -> int:
        cmd = [sys.executable, os.path.join(_HERE, "make_fixture.py"), "--out", out_dir,
               "--preset", preset, "--seed", str(seed),
               "--check-tokens", ";".join(",".join(map(str, p)) for p in prompts)]
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
