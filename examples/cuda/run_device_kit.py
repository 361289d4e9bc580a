#!/usr/bin/env python3
"""Runs a device kit (examples/cuda/make_device_kit.sh) on a GPU machine.

For every fixture: the CUDA executable's prefill and token-by-token decode
logits against the host build's (max |cuda - host| <= 1e-3 of the host row's
range, at least 1), and its greedy tokens against the host build's. A run
whose logits differ is run again with --dump-activations, and its kernel
trace is compared with the host build's (test/reference/compare_traces.py):
the first kernel call whose outputs differ is printed; then again as it was
(does it repeat bit for bit?), with kernels launched synchronously
(CUDA_LAUNCH_BLOCKING=1), without reused device allocations
(MOERT_DEVICE_REUSE=0) and, where the kit has them, with the builds that
change one thing about the device code (BUILD_VARIANTS), saying whether
each fixes it. A greedy run that
differs is run twice. Then --bench of each
full-size model on the GPU, beside the host numbers measured when the kit
was made. Plain Python 3 (no numpy): the GPU machine needs nothing but the
kit and this repository.

  python3 examples/cuda/run_device_kit.py KIT [--repeat N] [--save DIR] [--sanitize]

--save DIR keeps what the GPU produced for a later look on another machine:
every CUDA logits file and the trace of every failing run, under DIR/<fixture>/.
--sanitize runs each fixture's first failing prompt under compute-sanitizer's
initcheck (device memory read before anything wrote it).

Exits 1 when any comparison fails, or when the executables cannot use a GPU.
"""

import argparse
import array
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "test", "reference"))
import compare_traces  # noqa: E402

TOLERANCE = 1e-3


def read_f32(path):
    values = array.array("f")
    with open(path, "rb") as f:
        values.frombytes(f.read())
    return values


def compare(got, want, vocab):
    """The worst row's error as a fraction of its allowance (<= 1 passes)."""
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for row in range(len(want) // vocab):
        ref = want[row * vocab:(row + 1) * vocab]
        out = got[row * vocab:(row + 1) * vocab]
        allowed = TOLERANCE * max(1.0, max(ref) - min(ref))
        err = max(abs(a - b) for a, b in zip(out, ref))
        worst = max(worst, err / allowed)
    return worst


def run(cmd, env=None):
    return subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, **env) if env else None)


# Reruns of a failing prompt under switches that each rule a cause in or
# out: kernels launched synchronously (an ordering fault between launches
# and copies) and Halide's device allocations not reused across calls.
VARIANTS = [
    ("CUDA_LAUNCH_BLOCKING=1", {"CUDA_LAUNCH_BLOCKING": "1"}),
    ("MOERT_DEVICE_REUSE=0", {"MOERT_DEVICE_REUSE": "0"}),
]


# Builds of some fixtures (make_device_kit.sh's `variants`), each named
# cuda-<variant> beside the fixture's cuda executable.
BUILD_VARIANTS = [
    ("debug", "Halide's debug runtime"),
    ("strict", "strict_float"),
]


def variant_results(cmd, out, want, vocab, fixture):
    """Whether the failing run `cmd` repeats itself bit for bit (a race
    would not), and how it fares under each of VARIANTS and each build of
    BUILD_VARIANTS in the `fixture` directory."""
    first = read_f32(out)
    parts = []
    if run(cmd).returncode == 0:
        again = read_f32(out)
        diff = max([abs(a - b) for a, b in zip(first, again)] + [0.0])
        parts.append("rerun: " + ("bit-identical" if first == again
                                  else "differs by up to %.3g" % diff))
    runs = [(label, cmd, env) for label, env in VARIANTS]
    for variant, label in BUILD_VARIANTS:
        exe = os.path.join(fixture, "cuda-" + variant)
        if not os.path.exists(exe):
            continue
        # A variant without its own weight file shares the fixture's.
        weights = [] if os.path.exists(exe + ".weights") else [
            "--weights", os.path.join(fixture, "cuda.weights")]
        runs.append((label, [exe] + cmd[1:] + weights, None))
    for label, variant_cmd, env in runs:
        result = run(variant_cmd, env)
        if result.returncode != 0:
            parts.append("%s: exit %d" % (label, result.returncode))
            continue
        worst = compare(read_f32(out), want, vocab)
        parts.append("%s: %s (%.4f)" % (label, "fixed" if worst <= 1.0 else "still wrong",
                                        worst))
    return "; ".join(parts)


def initcheck(cmd):
    """compute-sanitizer's initcheck of `cmd`: reads of device memory that
    nothing wrote (zeroed on a CPU's fresh pages, anything on a GPU)."""
    tool = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
    if not os.path.exists(tool):
        return "initcheck: no compute-sanitizer here"
    try:
        result = subprocess.run([tool, "--tool", "initcheck", "--print-limit", "3"] + cmd,
                                capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "initcheck: still running after 300 s"
    lines = [l for l in (result.stdout + result.stderr).splitlines() if "=====" in l]
    return "initcheck: " + " | ".join(l.strip("= ").strip() for l in lines[-8:])


def first_kernel_difference(cmd, host_trace, tmp, saved, trace_name):
    """Reruns `cmd` dumping its kernel trace; the first call unlike the host's."""
    trace = os.path.join(tmp, trace_name)
    shutil.rmtree(trace, ignore_errors=True)
    result = run(cmd + ["--dump-activations", trace])
    if result.returncode != 0:
        return "the traced run failed: " + result.stderr.strip()
    if saved:
        shutil.copytree(trace, os.path.join(saved, trace_name), dirs_exist_ok=True)
    return compare_traces.first_difference(host_trace, trace, TOLERANCE)[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kit")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--save", help="directory to keep the CUDA outputs in")
    ap.add_argument("--sanitize", action="store_true",
                    help="run each fixture's first failing prompt under "
                         "compute-sanitizer's initcheck")
    args = ap.parse_args()
    sanitized = set()
    failed = 0
    tmp = tempfile.mkdtemp()
    fixtures = sorted(d for d in os.listdir(args.kit) if not d.startswith("bench-"))
    for name in fixtures:
        d = os.path.join(args.kit, name)
        exe = os.path.join(d, "cuda")
        i = 0
        while os.path.exists(os.path.join(d, "tokens-%d.txt" % i)):
            tokens = open(os.path.join(d, "tokens-%d.txt" % i)).read().strip()
            for mode in ["prefill", "decode"]:
                out = os.path.join(tmp, "logits.f32")
                cmd = [exe, "--tokens", tokens, "--logits-out", out]
                if mode == "decode":
                    cmd.append("--decode")
                result = run(cmd)
                if "device is usable here" in result.stderr:
                    print("no GPU here: " + result.stderr.strip())
                    return 1
                if result.returncode != 0:
                    print("FAIL %s %s: exit %d: %s" % (name, mode, result.returncode,
                                                       result.stderr.strip()))
                    failed += 1
                    continue
                want = read_f32(os.path.join(d, "%s-%d.f32" % (mode, i)))
                got = read_f32(out)
                # One row of logits per token, in both modes.
                vocab = len(want) // len(tokens.split(","))
                worst = compare(got, want, vocab)
                status = "ok  " if worst <= 1.0 else "FAIL"
                failed += worst > 1.0
                print("%s %-14s %-7s prompt %d: worst error %.4f of the tolerance" % (
                    status, name, mode, i, worst))
                saved = None
                if args.save:
                    saved = os.path.join(args.save, name)
                    os.makedirs(saved, exist_ok=True)
                    shutil.copy(out, os.path.join(saved, "%s-%d.f32" % (mode, i)))
                if worst > 1.0:
                    host_trace = os.path.join(d, "trace-%s-%d" % (mode, i))
                    if os.path.isdir(host_trace):
                        print("     " + first_kernel_difference(
                            cmd, host_trace, tmp, saved, "trace-%s-%d" % (mode, i)))
                    print("     " + variant_results(cmd, out, want, vocab, d))
                    if args.sanitize and name not in sanitized:
                        sanitized.add(name)
                        print("     " + initcheck(cmd))
            want = open(os.path.join(d, "greedy-%d.txt" % i)).read().strip()
            got = run([exe, "--tokens", tokens, "-n", "8"]).stdout.strip()
            status = "ok  " if got == want else "FAIL"
            failed += got != want
            print("%s %-14s greedy  prompt %d: %s (host %s)" % (status, name, i, got, want))
            if got != want:
                # Greedy generation reads only the last row of each prefill
                # (logits_last_only); a second run shows whether it repeats.
                again = run([exe, "--tokens", tokens, "-n", "8"]).stdout.strip()
                print("     rerun: %s" % ("the same" if again == got else again))
            i += 1

    print()
    print("| model | host 1 thread prefill / decode | host 2 threads | CUDA prefill / decode |")
    print("|---|---:|---:|---:|")
    for name in sorted(d for d in os.listdir(args.kit) if d.startswith("bench-")):
        d = os.path.join(args.kit, name)
        result = run([os.path.join(d, "cuda"), "--bench", "--json", "--repeat",
                      str(args.repeat)])
        if result.returncode != 0:
            print("FAIL %s --bench: %s" % (name, result.stderr.strip()))
            failed += 1
            continue
        gpu = json.loads(result.stdout)
        host = [json.load(open(os.path.join(d, "host-bench-%dt.json" % t))) for t in (1, 2)]
        cells = ["%.0f / %.0f" % (b["prefill_tokens_per_s"], b["decode_tokens_per_s"])
                 for b in host + [gpu]]
        print("| %s | %s |" % (name[len("bench-"):], " | ".join(cells)))
    print("\n%s" % ("all comparisons passed" if not failed else "%d failed" % failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
