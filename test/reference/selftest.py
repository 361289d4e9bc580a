#!/usr/bin/python3
"""The standalone runner and small helpers of the reference self-tests
(test_reference.py, test_family_references.py, test_linnet_reference.py).

No pytest needed: a test file ends with

    if __name__ == "__main__":
        sys.exit(selftest.run_tests(globals(), sys.argv[1:], TMP))

and `run_tests` runs every `test_*` function of that namespace (with --slow also the
`slow_*` ones), in name order. Options: -k SUBSTRING (only tests whose name contains
it), -v (print each test's time), --keep (keep the scratch directory TMP). The last
line printed is "N passed, M failed"; the exit code is 0 only if nothing failed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import traceback

import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over positions of max|a-b| / max(1, range of b's row) (DESIGN §3 metric)."""
    rng = (b.max(dim=-1).values - b.min(dim=-1).values).clamp_min(1.0)
    return float(((a - b).abs().max(dim=-1).values / rng).max())


def run(cmd) -> subprocess.CompletedProcess:
    """Run a command, capturing stdout and stderr as text."""
    return subprocess.run(cmd, capture_output=True, text=True)


def run_tests(namespace: dict, argv, tmp: str) -> int:
    """Run the test functions of `namespace` (a module's globals()) as described above;
    `tmp` is removed afterwards unless --keep is given. Returns the exit code."""
    only = argv[argv.index("-k") + 1] if "-k" in argv else None
    verbose = "-v" in argv
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    prefixes = ("test_", "slow_") if "--slow" in argv else ("test_",)
    tests = [(n, f) for n, f in sorted(namespace.items()) if n.startswith(prefixes) and callable(f)]
    if only:
        tests = [(n, f) for n, f in tests if only in n]
    passed = failed = 0
    for name, fn in tests:
        t0 = time.time()
        try:
            fn()
        except Exception:
            failed += 1
            print(f"FAIL {name} ({time.time() - t0:.1f}s)")
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"ok   {name} ({time.time() - t0:.1f}s)" if verbose else f"ok   {name}")
    if "--keep" not in argv:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}")
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1
