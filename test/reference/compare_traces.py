#!/usr/bin/env python3
"""Names the first kernel call whose outputs differ between two traced runs.

    moec compile M -o a --trace-kernels [--target=A]
    moec compile M -o b --trace-kernels [--target=B]
    ./a --tokens 1,2,3 --logits-out /dev/null --dump-activations WANT
    ./b --tokens 1,2,3 --logits-out /dev/null --dump-activations GOT
    python3 test/reference/compare_traces.py WANT GOT [--tol 1e-3]

A build made with --trace-kernels dumps every kernel call's outputs as
<entry>.<call>.<kernel>.<result>.f32|.i32 (rows appended call after call).
The calls are compared in order, each file as a whole: floats within
tol * max(1, largest |value| of WANT's file), integers exactly. The first
file that differs is printed, with its worst element, and the exit code is
1; 0 when every file agrees; 2 when the traces cannot be compared (a
directory without trace files, a file missing from GOT, different sizes).

Plain Python 3 (no numpy), so that it runs on a GPU machine that has nothing
but the executables: examples/cuda/run_device_kit.py uses it there.
"""

import argparse
import array
import os
import re
import sys

TRACE = re.compile(r"^(\w+)\.(\d+)\.(.+)\.(\d+)\.(f32|i32)$")


def trace_files(directory):
    """The trace file names of `directory`, in call order."""
    keyed = []
    for name in os.listdir(directory):
        m = TRACE.match(name)
        if m:
            keyed.append(((m.group(1), int(m.group(2)), int(m.group(4))), name))
    return [name for _, name in sorted(keyed)]


def read(path):
    values = array.array("f" if path.endswith(".f32") else "i")
    with open(path, "rb") as f:
        values.frombytes(f.read())
    return values


def first_difference(want_dir, got_dir, tol):
    """(exit code, message) of comparing the traces in the two directories."""
    names = trace_files(want_dir)
    if not names:
        return 2, "%s holds no trace (compile with --trace-kernels)" % want_dir
    for count, name in enumerate(names):
        got_path = os.path.join(got_dir, name)
        if not os.path.isfile(got_path):
            return 2, "%s: missing from %s" % (name, got_dir)
        want = read(os.path.join(want_dir, name))
        got = read(got_path)
        if len(want) != len(got):
            return 2, "%s: %d values, %d expected" % (name, len(got), len(want))
        if name.endswith(".i32"):
            for i, (a, b) in enumerate(zip(want, got)):
                if a != b:
                    return 1, ("%s differs (the first %d calls' outputs agree): "
                               "element %d of %d is %d, %d expected"
                               % (name, count, i, len(want), b, a))
            continue
        allowed = tol * max([1.0] + [abs(v) for v in want])
        worst, at = 0.0, 0
        for i, (a, b) in enumerate(zip(want, got)):
            err = abs(a - b)
            if not err <= worst:  # NaN counts as the worst
                worst, at = err, i
                if err != err:
                    break
        if not worst <= allowed:
            return 1, ("%s differs (the first %d calls' outputs agree): "
                       "|got - want| = %.6g at element %d of %d (%.6g, %.6g "
                       "expected; allowed %.3g)"
                       % (name, count, worst, at, len(want), got[at], want[at],
                          allowed))
    return 0, "no difference: %d kernel outputs agree" % len(names)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("want", help="the reference run's --dump-activations directory")
    ap.add_argument("got", help="the run under test's directory")
    ap.add_argument("--tol", type=float, default=1e-3,
                    help="allowed error, relative to max(1, largest |value|)")
    args = ap.parse_args()
    code, message = first_difference(args.want, args.got, args.tol)
    print(message)
    return code


if __name__ == "__main__":
    sys.exit(main())
