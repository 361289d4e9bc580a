#!/usr/bin/python3
"""moec's benchmark suite (issue 8; not a CI test: full-size models, minutes).

For every family at its published size (random weights, written by the
families' own PyTorch references) and every precision asked for:

  - compile with a cold kernel cache, then again with the warm one (seconds);
  - the executable's size and its weight file's;
  - --bench (prompt 128, generate 64) on each thread count, once every
    build is compiled, in rounds over every (build, threads): a warm-up
    round, then --runs rounds of one timed process each; median, min, max of
    prefill and decode tokens/s, and the largest peak RSS the executable
    reports (its VmHWM: getrusage would count this script's memory too);
  - beside each result, this machine's limits, measured by peaks.c: the
    decode roofline (DRAM read bandwidth / bytes of active weights per token)
    and the prefill one (FMA peak / 2 x active parameters), and the fraction
    of each reached;
  - llama.cpp's figures on the same shapes where issue 8 measured them, and
    a table of those rows against issue 8's goals (decode 1.5x llama.cpp, or
    90% of the roofline where 1.5x would exceed it; prefill 1.5x).

Writes DIR/report.md and DIR/report.json and prints the markdown
(--report-only: the markdown again from report.json). Results
are merged into an existing report.json by (family, precision), so a run
of some families or precisions updates their rows and keeps the others.

  examples/bench/suite.py [--families physics,ssmoelm] [--precisions published,q8,q4]
                          [--threads 1,2] [--runs 5] [--work build/bench/suite]
                          [--llama-cpp DIR]

--llama-cpp DIR runs llama.cpp's llama-bench (a checkout the user built for
the CPU) on random-weight GGUF files of the same shapes, one run after each
of moec's (llama_cpp.py), and judges the goals by those same-sitting figures
instead of issue 8's.

One-thread runs, moec's and llama.cpp's, are pinned to one CPU (--cpu, by
default the last): on this 2-vCPU machine SSMoELM decodes 30% slower on CPU 0
than on CPU 1 while llama.cpp's TQ1_0 runs alike on both, so where the
scheduler put a process changed a paired ratio by more than the kernels did.
--cpu=-1 leaves them where the scheduler puts them.

Active weight bytes are the weight file's bytes times active / total
parameters (`moec inspect --json`): exact for uniform precision, an
estimate for SSMoELM's mix of 1- and 4-bit codes.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "test", "reference"))

FAMILIES = ["physics", "ssmoelm", "slimmoe", "moonlight", "linnet"]
# moec flags of each precision; "published" is the checkpoint as shipped (f32,
# or SSMoELM's packed codes), "int8" those codes with int8 inputs. SSMoELM's
# f32, q8, q4 and mixed builds start from its f32 twin (its codes times their
# scales, as llama.cpp's F32/Q8_0/Q4_0 of that shape would), since --quant
# keeps weights that are already packed as they are.
PRECISIONS = {
    "published": [],
    "int8": ["--activations=int8"],
    "f32": [],
    "q8": ["--quant=q8"],
    "q4": ["--quant=q4"],
    "mixed": ["--quant=mixed"],
}
# llama.cpp (CPU, llama-bench, random weights in the same shapes, medians of
# 5; issue 8): (family, precision, threads) -> (llama.cpp type, decode,
# prefill-128) tokens/s.
LLAMA_CPP = {
    ("ssmoelm", "f32", 1): ("F32", 224, 1515),
    ("ssmoelm", "f32", 2): ("F32", 299, 2490),
    ("ssmoelm", "q8", 1): ("Q8_0", 785, 1771),
    ("ssmoelm", "q4", 1): ("Q4_0", 1040, 2554),
    ("ssmoelm", "q4", 2): ("Q4_0", 876, 4103),
    ("ssmoelm", "published", 1): ("TQ1_0", 885, 1340),
    ("ssmoelm", "int8", 1): ("TQ1_0", 885, 1340),
    ("physics", "published", 1): ("F32", 66, 311),
    ("physics", "published", 2): ("F32", 97, 575),
    ("physics", "q8", 1): ("Q8_0", 181, 362),
    ("physics", "q4", 1): ("Q4_0", 309, 534),
    ("physics", "q4", 2): ("Q4_0", 310, 990),
}


def log(message):
    print(message, file=sys.stderr, flush=True)


def run_json(cmd, preexec_fn=None):
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                     preexec_fn=preexec_fn).stdout)


def pinning(cpu, threads):
    """A preexec_fn that keeps a one-thread run on `cpu` (None when `cpu`
    is negative or the run has more threads)."""
    if cpu < 0 or threads != 1:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def measure_peaks(work, threads):
    exe = os.path.join(work, "peaks")
    subprocess.run(["gcc", "-O3", "-march=native", "-pthread",
                    os.path.join(ROOT, "examples", "bench", "peaks.c"), "-o", exe], check=True)
    return run_json([exe, str(max(threads))])


def runtime_code_bytes():
    """Text + data of the runtime's own objects (libmoert.a, libmoert_main.a)."""
    libs = [os.path.join(ROOT, "build", "lib", name) for name in ("libmoert.a", "libmoert_main.a")]
    out = subprocess.run(["size", "-t"] + libs, check=True, capture_output=True, text=True).stdout
    total = out.strip().splitlines()[-1].split()
    return int(total[0]) + int(total[1])


def ssmoelm_twin(model, path):
    """SSMoELM's f32 twin: every packed weight as codes times scales."""
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        log("writing the f32 twin of %s to %s" % (model, path))
        subprocess.run(["/usr/bin/python3",
                        os.path.join(ROOT, "test", "reference", "ssmoelm_model.py"),
                        "dequantize", "--model", model, "--out", path],
                       check=True, stdout=subprocess.DEVNULL)
    return path


def write_model(family, path):
    if os.path.exists(os.path.join(path, "config.json")) or os.path.exists(
            os.path.join(path, "model.safetensors")):
        return
    import families
    log("writing a full-size %s checkpoint to %s" % (family, path))
    start = time.time()
    families.get(family).write_fixture(path, "full", 1, {})
    log("  %.0f s" % (time.time() - start))


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def moec_run(exe, threads, cpu):
    """One timed --bench process (one-thread runs on `cpu`)."""
    return run_json([exe, "--bench", "--json", "-t", str(threads), "--repeat", "1",
                     "--prompt-len", "128", "--gen", "64"], pinning(cpu, threads))


def summarize(results, peers, peer_type):
    """A run's figures from its timed processes and, when llama.cpp ran
    beside them, the llama.cpp run after each ((decode, prefill), of
    `peer_type`)."""
    b = {"prefill": spread([r["prefill_tokens_per_s"] for r in results]),
         "decode": spread([r["decode_tokens_per_s"] for r in results]),
         "peak_rss_bytes": max(r["peak_rss_bytes"] for r in results),
         "session_bytes": results[0]["session_bytes"],
         "kernel_scratch_bytes": results[0]["kernel_scratch_bytes"]}
    if peers:
        # Ratios of each process to the peer run after it: the machine's
        # drift between rounds cancels.
        b["llama_cpp_same_sitting"] = {
            "type": peer_type,
            "decode": spread([p[0] for p in peers]),
            "prefill": spread([p[1] for p in peers]),
            "decode_ratio": spread([r["decode_tokens_per_s"] / p[0]
                                    for r, p in zip(results, peers)]),
            "prefill_ratio": spread([r["prefill_tokens_per_s"] / p[1]
                                     for r, p in zip(results, peers)])}
    return b


def torch_or_exit():
    """The checkpoints are written by the families' PyTorch references:
    fail before benchmarking anything when torch is not importable."""
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("suite.py: needs torch to write the checkpoints; run it with "
                 "/usr/bin/python3 (Debian's python3-torch), not %s" % sys.executable)


def merged_results(path, fresh):
    """report.json's earlier results, with those of this run replacing the
    same (family, precision)."""
    try:
        with open(path) as f:
            old = json.load(f).get("results", [])
    except (OSError, ValueError):
        old = []
    key = lambda e: (e["family"], e["precision"])
    done = {key(e) for e in fresh}
    return [e for e in old if key(e) not in done] + fresh


def decode_goal(llama_decode, roofline):
    """Issue 8's decode goal: 1.5x llama.cpp, or 90% of the roofline where
    1.5x would exceed it."""
    return 1.5 * llama_decode if 1.5 * llama_decode <= roofline else 0.9 * roofline


def llama_figures(b):
    """(source, type, decode, prefill, decode ratio, prefill ratio) of the
    llama.cpp figure a run is judged by: the same sitting's when measured
    (ratios: medians of the paired runs), else issue 8's; None without."""
    same = b.get("llama_cpp_same_sitting")
    if same:
        return ("same sitting", same["type"], same["decode"]["median"],
                same["prefill"]["median"], same["decode_ratio"]["median"],
                same["prefill_ratio"]["median"])
    if b["llama_cpp"]:
        kind, decode, prefill = b["llama_cpp"]
        return ("issue 8", kind, decode, prefill, b["decode"]["median"] / decode,
                b["prefill"]["median"] / prefill)
    return None


def goal_lines(report):
    """The rows with a llama.cpp figure, each against issue 8's goals. A
    1.5x goal is judged by the ratio (paired, in a same-sitting run), a
    roofline goal by moec's median alone."""
    lines = ["| model | threads | decode tok/s: moec / llama.cpp | x | decode goal | met | "
             "prefill tok/s: moec / llama.cpp | x | met |",
             "|---|---:|---:|---:|---|:-:|---:|---:|:-:|"]
    yes = lambda ok: "yes" if ok else "no"
    for e in sorted(report["results"], key=result_order):
        for t, b in sorted(e["runs"].items()):
            figures = llama_figures(b)
            if not figures:
                continue
            source, kind, llama_decode, llama_prefill, decode_ratio, prefill_ratio = figures
            decode, prefill = b["decode"]["median"], b["prefill"]["median"]
            roofline_goal = decode_goal(llama_decode, b["decode_roofline"])
            if roofline_goal < 1.5 * llama_decode:
                goal, met = "90%% roofline: %.0f" % roofline_goal, decode >= roofline_goal
            else:
                goal, met = "1.5x", decode_ratio >= 1.5
            lines.append("| %s %s | %s | %.0f / %.0f %s (%s) | %.2f | %s | %s | %.0f / %.0f | "
                         "%.2f | %s |" % (
                             e["family"], e["precision"], t, decode, llama_decode, kind, source,
                             decode_ratio, goal, yes(met), prefill, llama_prefill,
                             prefill_ratio, yes(prefill_ratio >= 1.5)))
    return lines


def result_order(e):
    return (FAMILIES.index(e["family"]) if e["family"] in FAMILIES else 99,
            list(PRECISIONS).index(e["precision"]))


def pinned_note(results):
    """Where the rows' one-thread runs ran (rows merged from earlier runs
    may differ)."""
    cpus = {e.get("one_thread_cpu", -1) for e in results}
    if cpus == {-1}:
        return "; one-thread runs not pinned"
    if len(cpus) == 1:
        return "; one-thread runs on CPU %d" % cpus.pop()
    return "; one-thread runs pinned per row (one_thread_cpu in report.json; -1: not pinned)"


def write_markdown(report, work):
    """report.md from a report (the one report.json holds)."""
    peaks = report["machine"]
    lines = ["machine: DRAM read %.0f / %.0f GB/s, cache-sized %.0f / %.0f GB/s, f32 FMA "
             "%.0f / %.0f GFLOP/s (1 / %d threads); runtime code %.1f KB" % (
                 peaks["dram_read_gbs"][0], peaks["dram_read_gbs"][1],
                 peaks["cache_read_gbs"][0], peaks["cache_read_gbs"][1],
                 peaks["fma_gflops"][0], peaks["fma_gflops"][1], peaks["threads"],
                 report["runtime_code_bytes"] / 1e3) + pinned_note(report["results"]), "",
             "| model | weights (active) | compile cold / warm | threads | decode tok/s "
             "(min-max) | of roofline | prefill tok/s (min-max) | of FMA peak | llama.cpp "
             "decode / prefill | peak RSS / (weights + session) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in sorted(report["results"], key=result_order):
        for t, b in sorted(e["runs"].items()):
            llama = llama_figures(b)
            budget = e["weights_bytes"] + b["session_bytes"] + b["kernel_scratch_bytes"]
            lines.append(
                "| %s %s | %.1f MB (%.1f) | %.1f / %.1f s | %s | %.0f (%.0f-%.0f) | %.0f%% | "
                "%.0f (%.0f-%.0f) | %.0f%% | %s | %.0f MB / %.0f MB |" % (
                    e["family"], e["precision"], e["weights_bytes"] / 1e6,
                    e["active_weight_bytes"] / 1e6, e["compile_cold_s"], e["compile_warm_s"], t,
                    b["decode"]["median"], b["decode"]["min"], b["decode"]["max"],
                    100 * b["decode"]["median"] / b["decode_roofline"],
                    b["prefill"]["median"], b["prefill"]["min"], b["prefill"]["max"],
                    100 * b["prefill"]["median"] / b["prefill_roofline"],
                    "%s %.0f / %.0f%s" % (llama[1], llama[2], llama[3],
                                          "" if llama[0] == "same sitting" else " (issue 8)")
                    if llama else "",
                    b["peak_rss_bytes"] / 1e6, budget / 1e6))
    lines += [""] + goal_lines(report)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(work, "report.md"), "w") as f:
        f.write(text)
    print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--precisions", default="published,q8,q4")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "bench", "suite"))
    ap.add_argument("--llama-cpp", metavar="DIR",
                    help="a llama.cpp checkout built for the CPU: run its llama-bench on "
                         "random-weight GGUF files of the same shapes, alternating with "
                         "moec's runs (physics and SSMoELM)")
    ap.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1,
                    help="the CPU one-thread runs (moec's and llama.cpp's) are pinned to; "
                         "-1: not pinned (default: the last CPU)")
    ap.add_argument("--report-only", action="store_true",
                    help="write report.md from the work directory's report.json, and stop")
    args = ap.parse_args()
    if args.report_only:
        with open(os.path.join(args.work, "report.json")) as f:
            write_markdown(json.load(f), args.work)
        return 0
    moec = os.path.join(ROOT, "build", "bin", "moec")
    threads = [int(t) for t in args.threads.split(",")]
    os.makedirs(args.work, exist_ok=True)

    torch_or_exit()
    peer = None
    if args.llama_cpp:
        from llama_cpp import LlamaCpp
        peer = LlamaCpp(args.llama_cpp, args.work)
    peaks = measure_peaks(args.work, threads)
    log("machine: %s" % json.dumps(peaks))
    report_path = os.path.join(args.work, "report.json")
    earlier = merged_results(report_path, [])
    report = {"machine": peaks, "runtime_code_bytes": runtime_code_bytes(), "results": earlier}
    jobs = []  # (entry, executable, (llama.cpp type, GGUF) or None)
    for family in args.families.split(","):
        model = os.path.join(args.work, "models", family)
        write_model(family, model)
        inspect = run_json([moec, "inspect", model, "--json"])
        total, active = inspect["total_params"], inspect["active_params"]
        for precision in args.precisions.split(","):
            if precision in ("int8", "f32") and family != "ssmoelm":
                continue  # int8: q8/q4 builds have them; f32: published is
            source, flags = model, list(PRECISIONS[precision])
            if family == "ssmoelm" and precision not in ("published", "int8"):
                source = ssmoelm_twin(model, model + "-f32")
                flags.append("--family=ssmoelm")
            exe = os.path.join(args.work, "exe", "%s-%s" % (family, precision))
            os.makedirs(os.path.dirname(exe), exist_ok=True)
            cache = os.path.join(args.work, "cache", "%s-%s" % (family, precision))
            shutil.rmtree(cache, ignore_errors=True)
            compile_cmd = [moec, "compile", source, "-o", exe, "-q",
                           "--kernel-cache=" + cache] + flags
            log("compile %s %s" % (family, precision))
            times = []
            for _ in ("cold", "warm"):
                start = time.time()
                subprocess.run(compile_cmd, check=True)
                times.append(time.time() - start)
            weights = os.path.getsize(exe + ".weights")
            entry = {"family": family, "precision": precision, "total_params": total,
                     "active_params": active, "weights_bytes": weights,
                     "active_weight_bytes": weights * active / total,
                     "executable_bytes": os.path.getsize(exe),
                     "compile_cold_s": times[0], "compile_warm_s": times[1],
                     "one_thread_cpu": args.cpu, "runs": {}}
            jobs.append((entry, exe, peer.model(family, precision, model) if peer else None))

    # Flush the files just written, so that no writeback shares the two
    # cores with the timed runs.
    os.sync()
    # Rounds over every (build, threads), not one build's processes in a
    # row: this machine has slow spells of a minute or more, which then
    # touch every build alike instead of all of one build's samples. Round
    # 0 is the warm-up.
    samples = {}
    for round_index in range(args.runs + 1):
        log("round %d of %d%s" % (round_index, args.runs,
                                   " (warm-up)" if round_index == 0 else ""))
        for job, (entry, exe, counterpart) in enumerate(jobs):
            for t in threads:
                result = moec_run(exe, t, args.cpu)
                other = (peer.bench(counterpart[1], t, pinning(args.cpu, t))
                         if counterpart else None)
                if round_index > 0:
                    results, peers = samples.setdefault((job, t), ([], []))
                    results.append(result)
                    if other:
                        peers.append(other)
    for job, (entry, exe, counterpart) in enumerate(jobs):
        for t in threads:
            b = summarize(*samples[(job, t)], counterpart[0] if counterpart else None)
            i = min(t, 2) - 1
            b["decode_roofline"] = peaks["dram_read_gbs"][i] * 1e9 / entry["active_weight_bytes"]
            b["prefill_roofline"] = peaks["fma_gflops"][i] * 1e9 / (2 * entry["active_params"])
            b["llama_cpp"] = LLAMA_CPP.get((entry["family"], entry["precision"], t))
            entry["runs"][str(t)] = b
    report["results"] = merged_results(report_path, [entry for entry, _, _ in jobs])
    with open(report_path, "w") as f:
        json.dump(report, f, indent=2)

    write_markdown(report, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
