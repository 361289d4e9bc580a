#!/usr/bin/python3
"""Compare logits files against the DESIGN §3 tolerance.

    /usr/bin/python3 test/reference/compare_logits.py --got got.f32 --ref ref.f32 --vocab V [--tol 1e-4] [--verbose]

Both files are raw float32 little-endian [T, V]. Passes iff at every position t
    max_v |got[t,v] - ref[t,v]| <= tol * max(1, max_v ref[t,v] - min_v ref[t,v]).
Exit 0 on pass, 1 on fail, 2 on unusable input (missing file, size mismatch, ...).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def load(path: str, vocab: int, what: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise ValueError(f"{what} file {path!r} does not exist")
    size = os.path.getsize(path)
    row = 4 * vocab
    if size == 0:
        raise ValueError(f"{what} file {path!r} is empty")
    if size % row:
        raise ValueError(f"{what} file {path!r} has {size} bytes, not a multiple of 4*vocab = {row} "
                         f"({size / row:.3f} rows): wrong --vocab or truncated file")
    return np.fromfile(path, dtype="<f4").reshape(size // row, vocab)


def compare(got: np.ndarray, ref: np.ndarray, tol: float):
    """Returns (ok, per-position max abs error, per-position allowed error)."""
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64)).max(axis=1)
    rng = ref.max(axis=1).astype(np.float64) - ref.min(axis=1).astype(np.float64)
    allowed = tol * np.maximum(1.0, rng)
    bad = ~(err <= allowed)           # NaN errors count as failures
    return (not bad.any()), err, allowed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="compare [T, V] float32 logits with a relative-to-range tolerance")
    ap.add_argument("--got", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--vocab", required=True, type=int)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--verbose", action="store_true", help="print every position")
    args = ap.parse_args(argv)
    if args.vocab <= 0:
        print("compare_logits: --vocab must be positive", file=sys.stderr)
        return 2
    try:
        got = load(args.got, args.vocab, "got")
        ref = load(args.ref, args.vocab, "ref")
    except ValueError as e:
        print(f"compare_logits: FAIL: {e}", file=sys.stderr)
        return 2
    if got.shape != ref.shape:
        print(f"compare_logits: FAIL: got has {got.shape[0]} positions, ref has {ref.shape[0]} (vocab {args.vocab})",
              file=sys.stderr)
        return 1
    if not np.isfinite(ref).all():
        print("compare_logits: FAIL: ref contains NaN/Inf", file=sys.stderr)
        return 1
    n_nonfinite = int((~np.isfinite(got)).sum())
    ok, err, allowed = compare(got, ref, args.tol)
    ratio = np.where(np.isnan(err), np.inf, err / allowed)
    worst = int(np.argmax(ratio))
    if args.verbose:
        for t in range(len(err)):
            print(f"  pos {t}: max_abs_err {err[t]:.3e} allowed {allowed[t]:.3e}"
                  f"{'' if err[t] <= allowed[t] else '  <-- FAIL'}")
    argmax_agree = int((got.argmax(axis=1) == ref.argmax(axis=1)).sum())
    status = "PASS" if ok else "FAIL"
    n_bad = int((~(err <= allowed)).sum())
    print(f"compare_logits: {status}: T={ref.shape[0]} V={args.vocab} max_abs_err={np.nanmax(err) if not np.isnan(err).all() else float('nan'):.3e} "
          f"worst pos {worst} (err {err[worst]:.3e}, allowed {allowed[worst]:.3e}, ratio {ratio[worst]:.3g}) "
          f"tol={args.tol:g} bad_positions={n_bad} argmax_agree={argmax_agree}/{ref.shape[0]}"
          + (f" non_finite_in_got={n_nonfinite}" if n_nonfinite else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
