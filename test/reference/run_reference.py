#!/usr/bin/python3
"""Reference logits for a moe100m-physics checkpoint.

    /usr/bin/python3 test/reference/run_reference.py --model DIR --tokens 1,2,3 --out ref.f32
        [--decode] [--set key=value ...] [--fp32-rope-angles]

Writes raw float32 little-endian logits of shape [T, vocab], no header (the same
contract as `<exe> --logits-out`). --decode computes them token by token through the
reference's own KV cache instead of one prefill. --set overrides a setting the tensor
shapes cannot show (rope_partial, rope_theta, rms_eps, mup_base_d, top_k). One summary
line goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from physics_model import SETTING_DEFAULTS, PhysicsModel  # noqa: E402


def parse_tokens(text: str):
    try:
        toks = [int(t) for t in text.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise ValueError(f"--tokens {text!r}: expected comma-separated integers") from None
    if not toks:
        raise ValueError("--tokens: empty")
    return toks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="moe100m-physics reference logits")
    ap.add_argument("--model", required=True, help="checkpoint directory (model.safetensors + config.json) or .safetensors file")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--out", required=True, help="output file: float32 LE [T, vocab]")
    ap.add_argument("--decode", action="store_true", help="token-by-token KV-cache path")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override " + "/".join(SETTING_DEFAULTS))
    ap.add_argument("--fp32-rope-angles", action="store_true",
                    help="compute RoPE angles in fp32 like the scaffold (default: fp64)")
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        tokens = parse_tokens(args.tokens)
        overrides = {}
        for item in args.set:
            k, sep, v = item.partition("=")
            if not sep or k not in SETTING_DEFAULTS:
                raise ValueError(f"--set {item!r}: expected one of {', '.join(SETTING_DEFAULTS)}=VALUE")
            overrides[k] = json.loads(v)
        model = PhysicsModel.from_dir(args.model, overrides=overrides,
                                      fp32_rope_angles=args.fp32_rope_angles)
        logits = model.decode(tokens) if args.decode else model.forward(tokens)
    except ValueError as e:
        print(f"run_reference: error: {e}", file=sys.stderr)
        return 2
    arr = logits.detach().numpy().astype("<f4", copy=False)
    if not np.isfinite(arr).all():
        print("run_reference: error: non-finite logits", file=sys.stderr)
        return 1
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(np.ascontiguousarray(arr).tobytes())
    os.replace(tmp, args.out)
    d = model.dims
    for note in d.notes:
        print(f"run_reference: note: {note}", file=sys.stderr)
    warn = ""
    if model.max_seq_len and len(tokens) > model.max_seq_len:
        warn = f" WARNING: T > max_seq_len {model.max_seq_len}"
    print(f"run_reference: {'decode' if args.decode else 'prefill'} T={len(tokens)} {d.summary()} "
          f"logits[{arr.shape[0]}x{arr.shape[1]}] range [{arr.min():.4f}, {arr.max():.4f}] "
          f"argmax(last)={int(arr[-1].argmax())} -> {args.out} ({time.time() - t0:.2f}s){warn}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
