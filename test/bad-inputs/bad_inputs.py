#!/usr/bin/python3
"""The bad-input corpus: inputs a stranger could hand moec or a compiled model,
each with the error it must give.

    bad_inputs.py --moec build/bin/moec [--work DIR] [--case NAME ...] [--list]

Every case is made from a small, valid physics fixture (test/reference) by one
change, so the error it must give is about that change alone. A case passes when
the command

  - exits with status 1 (not a signal, not 0, not a hang: 120 s at most),
  - prints every expected pattern on stderr (the file, the key or flag, and
    what was expected), and
  - leaves nothing behind: no output file, no temporary file beside it, and
    no file the input asked to create (the pickle that runs a command).

The inputs are written under --work (kept for inspection with --keep) and are
the same on every run: a failure can be reproduced by hand with the command the
runner prints.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "..", "reference")
sys.path.insert(0, REFERENCE)

import fixture_tokenizers  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402

TIMEOUT_S = 120
VOCAB = 600  # the fixture's vocabulary: room for the byte-level tokenizer


# ---------------------------------------------------------------- raw files

def read_raw(path):
    """(header dict, data bytes) of a safetensors file, the header as written."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def write_raw(path, header_text, data):
    """A safetensors file with `header_text` (bytes or str) taken verbatim."""
    if isinstance(header_text, str):
        header_text = header_text.encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_text)))
        f.write(header_text)
        f.write(data)


def first_weight(header, suffix):
    """The name of the first tensor whose name ends with `suffix`."""
    return next(k for k in sorted(header) if k.endswith(suffix))


# ---------------------------------------------------------------- the corpus

class Case:
    """One bad input: `make(work, model_dir)` writes it and returns the command
    (a list; MOEC and EXE are replaced) and the paths that must not exist."""

    def __init__(self, name, what, expect, make, needs_exe=False, address_space=None):
        self.name, self.what, self.expect, self.make = name, what, expect, make
        self.needs_exe = needs_exe
        self.address_space = address_space  # bytes: run under ulimit -v


def model_copy(work, good, name):
    out = os.path.join(work, name)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(good, out)
    return out


def compile_cmd(model, work, name, *flags):
    out = os.path.join(work, name + ".out")
    return ["MOEC", "compile", model, "-o", out, "-q", *flags], [out, out + ".weights"]


def edit_safetensors(edit):
    """A case maker that rewrites model.safetensors with edit(header, data, path)."""
    def make(work, good, name):
        model = model_copy(work, good, name)
        path = os.path.join(model, "model.safetensors")
        header, data = read_raw(path)
        edit(header, data, path)
        return compile_cmd(model, work, name)
    return make


def truncated(header, data, path):
    write_raw(path, json.dumps(header), data[:-100])


def header_past_eof(header, data, path):
    with open(path, "r+b") as f:
        f.write(struct.pack("<Q", 10 ** 7))


def overlapping(header, data, path):
    names = [k for k in header if k != "__metadata__"]
    names.sort(key=lambda k: header[k]["data_offsets"][0])
    a, b = header[names[0]], header[names[1]]
    b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + (
        b["data_offsets"][1] - b["data_offsets"][0])]
    write_raw(path, json.dumps(header), data)


def reversed_offsets(header, data, path):
    name = first_weight(header, "final_norm.weight")
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [end, begin]
    write_raw(path, json.dumps(header), data)


def byte_count(header, data, path):
    name = first_weight(header, "final_norm.weight")
    header[name]["shape"] = [header[name]["shape"][0] + 1]
    write_raw(path, json.dumps(header), data)


def huge_dims(header, data, path):
    name = first_weight(header, "final_norm.weight")
    header[name]["shape"] = [2 ** 40, 2 ** 40]
    write_raw(path, json.dumps(header), data)


def duplicate_key(header, data, path):
    name = first_weight(header, "final_norm.weight")
    text = json.dumps(header)
    entry = json.dumps(header[name])
    # The same key twice, the second entry pointing at the same bytes: a JSON
    # reader that keeps the last one would never notice.
    text = text[:-1] + ', "%s": %s}' % (name, entry)
    write_raw(path, text, data)


def non_utf8_name(header, data, path):
    name = first_weight(header, "final_norm.weight")
    text = json.dumps(header).encode().replace(
        ('"%s"' % name).encode(), b'"final_norm.\xff\xfe"')
    write_raw(path, text, data)


def bad_value(name, value):
    """Element 37 of tensor `name` becomes `value`. A projection is written
    re-laid-out (panels) and a norm straight from the checkpoint: both paths
    check."""
    def edit(header, data, path):
        begin, _ = header[name]["data_offsets"]
        assert header[name]["dtype"] == "F32"
        patched = bytearray(data)
        patched[begin + 4 * 37:begin + 4 * 38] = struct.pack("<f", value)
        write_raw(path, json.dumps(header), bytes(patched))
    return edit


def missing_tensor(header, data, path):
    tensors = read_safetensors(path)
    del tensors["blocks.1.attn.v_proj.weight"]
    write_safetensors(path, tensors)


def edit_config(edit):
    def make(work, good, name):
        model = model_copy(work, good, name)
        path = os.path.join(model, "config.json")
        with open(path) as f:
            config = json.load(f)
        text = edit(config)
        with open(path, "w") as f:
            f.write(text)
        return compile_cmd(model, work, name)
    return make


def torch_checkpoint(work, good, name, pickle_bytes, compress=False, extra=None):
    """A model directory holding only a torch zip checkpoint with this data.pkl."""
    model = os.path.join(work, name)
    shutil.rmtree(model, ignore_errors=True)
    os.makedirs(model)
    shutil.copy(os.path.join(good, "config.json"), model)
    path = os.path.join(model, "pytorch_model.bin")
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        for entry, payload in (extra or {}).items():
            z.writestr(entry, payload)
        z.writestr("archive/version", "3\n")
    return model


def os_system_pickle(work, good, name):
    marker = os.path.join(work, name + ".ran")
    # GLOBAL 'posix system', the command as a string, TUPLE1, REDUCE, STOP: what
    # pickle.dumps writes for an object whose __reduce__ returns os.system.
    command = ("touch " + marker).encode()
    payload = (b"\x80\x02cposix\nsystem\nX" + struct.pack("<I", len(command)) + command
               + b"\x85R.")
    model = torch_checkpoint(work, good, name, payload)
    cmd, outputs = compile_cmd(model, work, name)
    return cmd, outputs + [marker]


def zip_bomb(work, good, name):
    # 64 MiB of zeros deflate to 64 KiB: a reader that inflated entries would
    # spend the memory; torch.save never compresses, so moec refuses.
    model = torch_checkpoint(work, good, name, b"\x80\x02}q\x00.", compress=True,
                             extra={"archive/data/0": b"\0" * (64 << 20)})
    return compile_cmd(model, work, name)


def missing_tokenizer(work, good, name):
    model = model_copy(work, good, name)
    return compile_cmd(model, work, name, "--tokenizer=" + os.path.join(model, "nope.json"))


def broken_tokenizer(work, good, name):
    model = model_copy(work, good, name)
    path = os.path.join(model, "tokenizer.json")
    with open(path) as f:
        tok = json.load(f)
    tok["model"]["vocab"]["!"] = "seven"
    with open(path, "w") as f:
        json.dump(tok, f)
    return compile_cmd(model, work, name)


def huge_description_dim(work, good, name):
    """The physics family's description with shape(embedding, 1e48) for
    d_model: an index past int64_t (found by fuzz_family)."""
    with open(os.path.join(HERE, "..", "..", "frontends", "families", "moe100m-physics.json")) as f:
        description = json.load(f)
    description["family"] = "physics-huge-dim"
    description["dims"]["d_model"] = "shape(embedding, 1e48)"
    path = os.path.join(work, name + ".json")
    with open(path, "w") as f:
        json.dump(description, f)
    return compile_cmd(good, work, name, "--family=" + path)


def packed_stack_without_expert(work, good, name):
    """The SSMoELM description with one expert's name for every expert of a packed
    stack: every expert would be the same tensor (found by fuzz_family), on the
    bundled trained SSMoELM (examples/kjv/ssmoelm)."""
    families = os.path.join(HERE, "..", "..", "frontends", "families")
    with open(os.path.join(families, "ssmoelm.json")) as f:
        description = json.load(f)
    description["family"] = "ssmoelm-one-expert"
    description["layer_tensors"]["expert_gate"]["name"] = "model.layers.{i}.mlp.experts.0.gate_proj.weight"
    path = os.path.join(work, name + ".json")
    with open(path, "w") as f:
        json.dump(description, f)
    model = os.path.join(HERE, "..", "..", "examples", "kjv", "ssmoelm")
    return compile_cmd(model, work, name, "--family=" + path)


def bad_compile_flag(work, good, name):
    return compile_cmd(good, work, name, "--quant=q5")


def calibration_missing_text(work, good, name):
    return compile_cmd(good, work, name, "--quant=q4a",
                       "--quant-calibration=" + os.path.join(work, "nope.txt"))


def calibration_without_quant(work, good, name):
    path = os.path.join(work, name + ".txt")
    with open(path, "w") as f:
        f.write("the quick brown fox jumps over the lazy dog.\n")
    return compile_cmd(good, work, name, "--quant-calibration=" + path)


def run_exe(*args):
    def make(work, good, name):
        return ["EXE", *[a(work) if callable(a) else a for a in args]], []
    return make


def long_prompt_file(work):
    path = os.path.join(work, "long-prompt.txt")
    with open(path, "w") as f:
        f.write("the quick brown fox jumps over the lazy dog. " * 400)
    return path


def other_weights(work):
    return os.path.join(work, "other.out.weights")


def truncated_weights(work):
    path = os.path.join(work, "truncated.weights")
    with open(os.path.join(work, "good.out.weights"), "rb") as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(blob[:len(blob) // 2])
    return path


CASES = [
    # Checkpoint files.
    Case("truncated", "the safetensors file loses its last 100 bytes",
         [r"model\.safetensors: tensor '.+': data_offsets .* the file is truncated"],
         edit_safetensors(truncated)),
    Case("header-past-eof", "the header length points past the end of the file",
         [r"model\.safetensors: header length 10000000 points past the end of the file"],
         edit_safetensors(header_past_eof)),
    Case("overlapping-offsets", "two tensors share bytes",
         [r"model\.safetensors: tensor '.+': data_offsets \[\d+, \d+\] overlap another tensor"], edit_safetensors(overlapping)),
    Case("reversed-offsets", "a tensor's data_offsets end before they begin",
         [r"model\.safetensors: tensor 'final_norm\.weight': data_offsets \[\d+, \d+\] end before they begin"],
         edit_safetensors(reversed_offsets)),
    Case("byte-count", "a shape whose byte count is not its data's",
         [r"model\.safetensors: tensor 'final_norm\.weight': data_offsets \[\d+, \d+\] hold 256 bytes, but shape and dtype F32 need 260"],
         edit_safetensors(byte_count)),
    Case("huge-dims", "a shape of 2^40 x 2^40 elements (its byte count overflows)",
         [r"model\.safetensors: tensor 'final_norm\.weight': shape has more elements than fit in 64 bits"],
         edit_safetensors(huge_dims)),
    Case("duplicate-key", "a tensor named twice in the header",
         [r"model\.safetensors: header repeats the key 'final_norm\.weight'"],
         edit_safetensors(duplicate_key)),
    Case("non-utf8-name", "a tensor name that is not UTF-8",
         [r"model\.safetensors: header is not valid JSON: .*ill-formed UTF-8"], edit_safetensors(non_utf8_name)),
    Case("nan-weight", "a NaN in a projection weight",
         [r"model\.safetensors: tensor 'blocks\.0\.attn\.q_proj\.weight' holds NaN at element 37: a weight must be finite"],
         edit_safetensors(bad_value("blocks.0.attn.q_proj.weight", float("nan")))),
    Case("inf-weight", "an infinity in a projection weight",
         [r"model\.safetensors: tensor 'blocks\.0\.attn\.q_proj\.weight' holds \+infinity at element 37"],
         edit_safetensors(bad_value("blocks.0.attn.q_proj.weight", float("inf")))),
    Case("nan-norm", "a NaN in a norm weight, which is written as the checkpoint has it",
         [r"model\.safetensors: tensor 'final_norm\.weight' holds NaN at element 37"],
         edit_safetensors(bad_value("final_norm.weight", float("nan")))),
    Case("missing-tensor", "a tensor the family needs is absent",
         [r"model\.safetensors: missing tensor 'blocks\.1\.attn\.v_proj\.weight' \(layer 1: v\)"],
         edit_safetensors(missing_tensor)),
    Case("os-system-pickle", "a torch checkpoint whose pickle calls os.system",
         [r"pytorch_model\.bin: data\.pkl at byte \d+: refuses the global 'posix\.system'"], os_system_pickle),
    Case("zip-bomb", "a torch checkpoint with a compressed entry",
         [r"pytorch_model\.bin: .*member 'archive/data\.pkl' is compressed"], zip_bomb),
    # Configs and tokenizers.
    Case("config-wrong-type", "config.json's n_layers is a string",
         [r"config\.json: 'n_layers' should be a number, got \"three\""],
         edit_config(lambda c: json.dumps(dict(c, n_layers="three")))),
    Case("config-not-json", "config.json is cut in half",
         [r"config\.json: not valid JSON"], edit_config(lambda c: json.dumps(c)[:20])),
    Case("missing-tokenizer", "--tokenizer names a file that is not there",
         [r"--tokenizer=.*nope\.json: no such file"], missing_tokenizer),
    Case("broken-tokenizer", "a vocabulary entry whose id is a string",
         [r"tokenizer\.json: .*'!'"], broken_tokenizer),
    Case("description-huge-dim", "a family description's shape() asks for dimension 1e48",
         [r"huge-dim\.json: dims\.d_model: in expression 'shape\(embedding, 1e48\)' at column \d+: shape\(embedding, k\): k must be a dimension index 0, 1, 2, \.\.\., got 1e\+48"],
         huge_description_dim),
    Case("description-packed-stack-without-e", "a packed expert stack whose name has no {e}",
         [r"without-e\.json: layer_tensors\.expert_gate\.stack: stacks tensors whose 'name' has an \{e\} "
          r"\(expert index\), at least one of them"],
         packed_stack_without_expert),
    Case("bad-compile-flag", "--quant names no precision",
         [r"--quant: 'q5': expected q8, q4, q2, q1, q8a, q4a, q2a, q1a, mixed or none"], bad_compile_flag),
    Case("calibration-missing-text", "--quant-calibration names a file that is not there",
         [r"--quant-calibration=.*nope\.txt: [Nn]o such file or directory"], calibration_missing_text),
    Case("calibration-without-quant", "--quant-calibration with nothing to quantize",
         [r"--quant-calibration=.*\.txt: nothing is quantized; add --quant or --quant-policy"],
         calibration_without_quant),
    # The compiled executable.
    Case("prompt-past-context", "a prompt longer than the context",
         [r"-f .*long-prompt\.txt: the prompt is \d+ tokens and the context holds 256"], run_exe("-f", long_prompt_file, "-n", "1"),
         needs_exe=True),
    Case("tokens-past-vocab", "--tokens with an id outside the vocabulary",
         [r"--tokens: token %d is outside the vocabulary \[0, %d\)" % (VOCAB, VOCAB)],
         run_exe("--tokens", "1,2,%d" % VOCAB), needs_exe=True),
    Case("bad-run-flag", "-t is not a number",
         [r"-t: 'many' is not a whole number"], run_exe("-t", "many", "--tokens", "1"),
         needs_exe=True),
    Case("context-past-memory", "-c asks for a KV cache larger than the memory left (ulimit -v 2 GiB)",
         [r"the session needs \d+\.\d MiB \(KV cache \d+\.\d MiB for a context of 16000000 tokens, "
          r".*\) and the address-space limit \(ulimit -v\) leaves \d+\.\d MiB: lower -c/--ctx-size"],
         run_exe("-c", "16000000", "--tokens", "1"), needs_exe=True, address_space=2 << 30),
    Case("foreign-weights", "the weight file of another compile",
         [r"other\.out\.weights: weight hash 0x[0-9a-f]+, the executable expects 0x[0-9a-f]+",
          r"this executable is .*good\.out; its own weights are .*good\.out\.weights"],
         run_exe("--weights", other_weights, "--tokens", "1"), needs_exe=True),
    Case("truncated-weights", "a weight file cut in half",
         [r"truncated\.weights: truncated: \d+ bytes of data, the header promises \d+"], run_exe("--weights", truncated_weights, "--tokens", "1"),
         needs_exe=True),
]


# ---------------------------------------------------------------- running

def make_good(work, moec, env):
    """The valid fixture (f32, with a byte-level tokenizer) and, compiled from
    it and from a second seed, the executables the run-time cases use."""
    good = os.path.join(work, "good")
    subprocess.run([sys.executable, os.path.join(REFERENCE, "make_fixture.py"), "--out", good,
                    "--preset", "tiny", "--seed", "1", "--dtype", "F32",
                    "--set", "vocab_size=%d" % VOCAB], check=True, stdout=subprocess.DEVNULL)
    fixture_tokenizers.byte_level(good)
    return good


def compile_good(work, good, moec, env):
    other = os.path.join(work, "other")
    subprocess.run([sys.executable, os.path.join(REFERENCE, "make_fixture.py"), "--out", other,
                    "--preset", "tiny", "--seed", "2", "--dtype", "F32",
                    "--set", "vocab_size=%d" % VOCAB], check=True, stdout=subprocess.DEVNULL)
    for name, model in (("good", good), ("other", other)):
        subprocess.run([moec, "compile", model, "-o", os.path.join(work, name + ".out"), "-q"],
                       check=True, env=env)
    return os.path.join(work, "good.out")


def interrupted_compile(work, good, moec, env):
    """Ctrl-C at several moments of a compile: never a temporary file left,
    and never an executable without its weights. Returns what went wrong
    ('' when nothing did)."""
    out = os.path.join(work, "interrupted", "m")
    problems = []
    # With the kernels cached (compile_good compiled this model), the weight
    # file is written from about 0.15 s and the executable linked by about
    # 1.3 s: most of these land while temporary files exist.
    for delay in (0.1, 0.3, 0.5, 0.7, 0.9, 1.1, 1.25):
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)
        os.makedirs(os.path.dirname(out))
        proc = subprocess.Popen([moec, "compile", good, "-o", out, "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=TIMEOUT_S)
        left = sorted(os.listdir(os.path.dirname(out)))
        if any(".tmp" in name for name in left):
            problems.append("after %.1f s: left %s" % (delay, ", ".join(left)))
        # The weights are renamed into place just before the executable, so
        # an interrupt between the two leaves weights without an executable
        # (harmless); never an executable without its weights.
        elif left not in ([], ["m.weights"], ["m", "m.weights"]):
            problems.append("after %.1f s: only %s" % (delay, ", ".join(left)))
    problems += interrupted_link(work, good, moec, env)
    return "; ".join(problems)


# A compiler driver that, like gcc (collect2, ld), links in a child process,
# slowly: the child writes the executable a second after the driver started.
# Compiling (-c) goes to the real driver.
SLOW_LINKER = """#!/bin/sh
for a in "$@"; do [ "$a" = -c ] && exec %s "$@"; done
out=; prev=
for a in "$@"; do [ "$prev" = -o ] && out=$a; prev=$a; done
touch "$MOEC_TEST_STARTED"
( sleep 1; echo linked > "$out" )
"""


def slow_link_env(work, moec, env):
    """`env` with the slow driver first on PATH, and the file it touches
    when it starts linking; or a string saying why there is none."""
    tools = os.path.join(work, "slow-driver")
    shutil.rmtree(tools, ignore_errors=True)
    os.makedirs(tools)
    targets = subprocess.run([moec, "targets"], stdout=subprocess.PIPE, text=True,
                             env=env, check=True).stdout
    cc = re.search(r"^  host .*?needs \S+ \(([^:()]+): installed\)", targets, re.S | re.M)
    if not cc:
        return "interrupted link: `moec targets` names no installed host compiler"
    real = shutil.which(cc.group(1))
    driver = os.path.join(tools, cc.group(1))
    with open(driver, "w") as f:
        f.write(SLOW_LINKER % real)
    os.chmod(driver, 0o755)
    started = os.path.join(tools, "started")
    return dict(env, PATH=tools + os.pathsep + env.get("PATH", ""),
                MOEC_TEST_STARTED=started), started


def interrupted_link(work, good, moec, env):
    """Ctrl-C, and `kill -TERM`, while the compiler driver's child, not the
    driver, links the executable: moec must stop the child too, or it writes
    moec's temporary file after the interrupt removed it, and end by the
    signal it got. Deterministic, unlike the moments above, which find this
    only when a signal lands in a few milliseconds of a link (an occasional
    CI failure before moec stopped whole process groups)."""
    slow = slow_link_env(work, moec, env)
    if isinstance(slow, str):
        return [slow]
    slow_env, started = slow
    out = os.path.join(work, "interrupted", "m")
    problems = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signame = signal.Signals(sig).name
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)
        os.makedirs(os.path.dirname(out))
        if os.path.exists(started):
            os.remove(started)
        proc = subprocess.Popen([moec, "compile", good, "-o", out, "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=slow_env)
        deadline = time.time() + TIMEOUT_S
        while not os.path.exists(started) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        if proc.poll() is not None:
            problems.append("%s during the link: moec exited (%d) before running the compiler"
                            % (signame, proc.returncode))
            continue
        proc.send_signal(sig)
        proc.wait(timeout=TIMEOUT_S)
        time.sleep(2)  # the driver's child, if it survived, has linked by now
        left = sorted(os.listdir(os.path.dirname(out)))
        if any(".tmp" in name for name in left) or "m" in left:
            problems.append("%s during the link: the compiler driver's child left %s"
                            % (signame, ", ".join(left)))
        elif proc.returncode != -sig:
            problems.append("%s during the link: moec ended with %d, not by %s"
                            % (signame, proc.returncode, signame))
    return problems


def run_case(case, work, good, moec, exe, env):
    """'' when the case gives its error, else what went wrong."""
    cmd, must_not_exist = case.make(work, good, case.name)
    cmd = [moec if a == "MOEC" else exe if a == "EXE" else a for a in cmd]
    before = set(os.listdir(work))
    try:
        limit = None
        if case.address_space:
            def limit():
                resource.setrlimit(resource.RLIMIT_AS, (case.address_space, case.address_space))
        proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S, env=env,
                              preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return "hung (no exit in %d s)" % TIMEOUT_S, cmd, ""
    err = proc.stderr.decode(errors="replace")
    problems = []
    if proc.returncode < 0:
        problems.append("killed by signal %d" % -proc.returncode)
    elif proc.returncode != 1:
        problems.append("exit status %d, expected 1" % proc.returncode)
    for pattern in case.expect:
        if not re.search(pattern, err):
            problems.append("stderr lacks /%s/" % pattern)
    left = [p for p in must_not_exist if os.path.exists(p)]
    left += sorted(os.path.join(work, p) for p in set(os.listdir(work)) - before
                   if p != case.name and not p.endswith((".txt", ".weights")))
    if left:
        problems.append("left behind: " + ", ".join(left))
    return "; ".join(problems), cmd, err


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moec", required=True)
    ap.add_argument("--work", help="where the inputs are written (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep --work's inputs")
    ap.add_argument("--case", action="append", help="run only these cases")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    args = ap.parse_args()
    if args.list:
        for case in CASES:
            print("%-20s %s" % (case.name, case.what))
        return 0
    cases = [c for c in CASES if not args.case or c.name in args.case]
    unknown = set(args.case or []) - {c.name for c in CASES} - {"interrupted-compile"}
    if unknown:
        print("error: --case: no case named %s (--list shows them)" % ", ".join(sorted(unknown)))
        return 2

    work = args.work or tempfile.mkdtemp(prefix="moec-bad-inputs-")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ)
    moec = os.path.abspath(args.moec)
    good = make_good(work, moec, env)
    interrupt = not args.case or "interrupted-compile" in args.case
    exe = (compile_good(work, good, moec, env)
           if interrupt or any(c.needs_exe for c in cases) else None)

    failed = 0
    for case in cases:
        problem, cmd, err = run_case(case, work, good, moec, exe, env)
        first = err.strip().splitlines()[0] if err.strip() else "(nothing on stderr)"
        if problem:
            failed += 1
            print("FAIL %-20s %s\n     %s\n     command: %s\n     stderr: %s"
                  % (case.name, case.what, problem, " ".join(cmd), err.strip()))
        else:
            print("ok   %-20s %s" % (case.name, first))
    if interrupt:
        problem = interrupted_compile(work, good, moec, env)
        if problem:
            failed += 1
            print("FAIL %-20s %s" % ("interrupted-compile", problem))
        else:
            print("ok   %-20s Ctrl-C at 7 moments, Ctrl-C and SIGTERM during a slow link left no "
                  "temporary file and no lone output" % "interrupted-compile")
        cases = cases + [None]
    print("%d of %d bad inputs gave their error" % (len(cases) - failed, len(cases)))
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
