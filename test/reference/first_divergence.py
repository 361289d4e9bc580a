#!/usr/bin/python3
"""Names the first layer and step where a compiled model departs from its reference.

    <exe> --tokens 1,2,3 --logits-out /dev/null --dump-activations DUMP
    /usr/bin/python3 test/reference/first_divergence.py --family linnet --model DIR \
        --tokens 1,2,3 --dump DUMP [--tol 1e-4]

The executable writes, per layer, the residual stream after attention
(layerN.attention.f32), its router's choices (layerN.experts.i32, layerN.gates.f32) and
the hidden state after the layer (layerN.hidden.f32), one row per token. The family's
PyTorch reference (test/reference/families.py) runs the same tokens with `trace=` and
records what it has of these (linnet all; the others the router and hidden state; physics
the router). Layers are compared in order, each step before the ones it feeds; the first mismatch is printed and the exit
code is 1. Hidden states use the DESIGN.md tolerance (max |got - ref| <= tol * max(1,
range of the reference row)); experts are compared as sets per token, gates by expert.
This is how a user debugs their own family description: a wrong eps, RoPE layout or
router setting shows up in the first layer whose output it changes.

Exit codes: 0 no divergence, 1 divergence, 2 unusable input (missing dump, bad sizes).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import families  # noqa: E402


def load_dump(directory: str, name: str, ext: str, tokens: int):
    """Rows [tokens, width] of DUMP/name.ext, or None when the file is absent."""
    path = os.path.join(directory, f"{name}.{ext}")
    if not os.path.isfile(path):
        return None
    data = np.fromfile(path, dtype="<f4" if ext == "f32" else "<i4")
    if data.size % tokens:
        raise ValueError(f"{path}: {data.size} values are not rows of {tokens} tokens "
                         "(dump a run of exactly the prompt, e.g. with --logits-out)")
    rows = data.reshape(-1, data.size // tokens) if data.size else data
    return rows[:tokens]


def compare_rows(dump_dir: str, layer: int, name: str, what: str, reference, tokens: int,
                 tol: float, hint: str):
    """The mismatch message of dump layerN.<name>.f32 against `reference`, or None."""
    got = load_dump(dump_dir, f"layer{layer}.{name}", "f32", tokens)
    if got is None:
        return f"layer {layer}: no {what} dump (layer{layer}.{name}.f32)"
    ref = np.asarray(reference, dtype=np.float32).reshape(tokens, -1)
    if got.shape != ref.shape:
        return f"layer {layer} {what}: shape {got.shape}, the reference {ref.shape}"
    for t in range(tokens):
        err = float(np.abs(got[t] - ref[t]).max())
        bound = tol * max(1.0, float(ref[t].max() - ref[t].min()))
        if not err <= bound:
            return (f"layer {layer} {what}: token {t} differs by {err:.3g} (tolerance "
                    f"{bound:.3g}); {hint}")
    return None


def first_divergence(trace, dump_dir: str, tokens: int, tol: float):
    """(message, diverged) for the first mismatching step, else a summary."""
    compared = 0
    for entry in trace:
        layer = entry["layer"]
        if "attention" in entry:
            message = compare_rows(dump_dir, layer, "attention", "output of attention",
                                   entry["attention"], tokens, tol,
                                   "look at its norm, QKV, RoPE, QK-norm or attention")
            if message:
                return message, True
            compared += 1
        experts = entry.get("experts", entry.get("idx"))
        if experts is not None:
            got = load_dump(dump_dir, f"layer{layer}.experts", "i32", tokens)
            if got is None:
                return f"layer {layer}: no router dump (layer{layer}.experts.i32)", True
            ref = np.asarray(experts).reshape(tokens, -1)
            gates_got = load_dump(dump_dir, f"layer{layer}.gates", "f32", tokens)
            gates_ref = entry.get("weights")
            if gates_ref is not None and "kept" in entry:
                # A capacity rule's dropped assignments weigh 0 (Moonlight).
                gates_ref = np.where(np.asarray(entry["kept"]), np.asarray(gates_ref), 0.0)
            for t in range(tokens):
                if sorted(got[t].tolist()) != sorted(ref[t].tolist()):
                    return (f"layer {layer} router: token {t} picks experts "
                            f"{sorted(got[t].tolist())}, the reference "
                            f"{sorted(ref[t].tolist())}"), True
                if gates_got is not None and gates_ref is not None:
                    want = dict(zip(ref[t].tolist(), np.asarray(gates_ref).reshape(tokens, -1)[t]))
                    for e, g in zip(got[t].tolist(), gates_got[t]):
                        if abs(float(g) - float(want[e])) > tol:
                            return (f"layer {layer} router: token {t} weighs expert {e} "
                                    f"{float(g):.6g}, the reference {float(want[e]):.6g}"), True
            compared += 1
        if "hidden" in entry:
            message = compare_rows(dump_dir, layer, "hidden", "hidden state", entry["hidden"],
                                   tokens, tol, "the router of this layer agreed, so look at "
                                   "its experts")
            if message:
                return message, True
            compared += 1
    return f"no divergence: {compared} layer outputs and router choices agree", False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", required=True, help=", ".join(families.FAMILIES))
    ap.add_argument("--model", required=True, help="the checkpoint directory")
    ap.add_argument("--tokens", required=True, help="the prompt, comma-separated ids")
    ap.add_argument("--dump", required=True, help="the executable's --dump-activations DIR")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args(argv)
    try:
        tokens = [int(t) for t in a.tokens.split(",") if t.strip()]
        model = families.get(a.family).load(a.model)
        trace = []
        model.forward(tokens, trace=trace)
        if not trace:
            raise ValueError(f"the {a.family} reference records no trace")
        message, diverged = first_divergence(trace, a.dump, len(tokens), a.tol)
    except ValueError as e:
        print(f"first_divergence: error: {e}", file=sys.stderr)
        return 2
    print(message)
    return 1 if diverged else 0


if __name__ == "__main__":
    sys.exit(main())
