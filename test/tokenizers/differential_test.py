#!/usr/bin/python3
"""moec's tokenizer against the reference implementations, on real files.

For each case, every text of corpus.py is encoded by the peer (Hugging
Face's tokenizers.js, or js-tiktoken) and by `moec tokenize` (the runtime's
C tokenizer, on the blob a compiled model embeds). The ids must be
identical, moec's decoding of them must equal the peer's, and for
byte-level tokenizers it must give back the text itself (after U+FFFD
replacement of invalid bytes).

    differential_test.py --moec build/bin/moec --peers DIR [--case NAME]

DIR holds node_modules with the packages of package.json (npm ci).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import corpus  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))

# The extra ids Moonlight uses beside GPT-2's ranks (its family description,
# "tiktoken_special"); js-tiktoken is given the same.
MOONLIGHT_SPECIAL = {"<|endoftext|>": 50256, "<|system|>": 50257,
                     "<|user|>": 50258, "<|assistant|>": 50259}


def cases(peers, work):
    models = os.path.join(peers, "node_modules", "@lenml")
    out = [
        dict(name="gpt2-tokenizer.json", kind="byte-level",
             peer=["hf", os.path.join(models, "tokenizer-gpt2", "models")],
             moec=[os.path.join(models, "tokenizer-gpt2", "models", "tokenizer.json")]),
        dict(name="llama-tokenizer.json (byte fallback)", kind="byte-fallback",
             peer=["hf", os.path.join(models, "tokenizer-llama2", "models")],
             moec=[os.path.join(models, "tokenizer-llama2", "models", "tokenizer.json")]),
        dict(name="gpt2 tiktoken ranks", kind="byte-level",
             peer=["tiktoken", "gpt2"],
             moec=[os.path.join(work, "gpt2.tiktoken"), "--family=moonlight-moe"],
             setup=["ranks", "gpt2", os.path.join(work, "gpt2.tiktoken")]),
    ]
    kjv = os.path.join(REPO, "examples", "kjv", "model")
    if os.path.exists(os.path.join(kjv, "tokenizer.json")):
        out.append(dict(name="examples/kjv tokenizer.json", kind="byte-level",
                        peer=["hf", kjv], moec=[os.path.join(kjv, "tokenizer.json")]))
    return out


def run(argv, **kw):
    result = subprocess.run(argv, capture_output=True, **kw)
    if result.returncode != 0:
        sys.exit(f"FAILED: {' '.join(argv)}\n{result.stderr.decode(errors='replace')}")
    return result.stdout


def sanitized(data: bytes) -> bytes:
    return data.decode("utf-8", errors="replace").encode("utf-8")


def check_case(case, args, corpus_path, texts, work):
    # Node resolves packages from the script's directory: run it beside
    # node_modules.
    node = ["node", os.path.join(args.peers, "peer.mjs")]
    env = dict(os.environ, MOERT_PEER_SPECIAL=json.dumps(MOONLIGHT_SPECIAL))
    if "setup" in case:
        run(node + case["setup"], cwd=args.peers, env=env)
    peer_lines = run(node + case["peer"] + [corpus_path], cwd=args.peers,
                     env=env).decode().splitlines()
    ours = run([args.moec, "tokenize"] + case["moec"] +
               ["--file", corpus_path, "--batch"]).decode().splitlines()
    ids_path = os.path.join(work, "ids.txt")
    with open(ids_path, "w") as f:
        f.write("\n".join(ours) + "\n")
    decoded = run([args.moec, "tokenize"] + case["moec"] +
                  ["--file", ids_path, "--batch", "--decode"]).decode().splitlines()
    if not (len(peer_lines) == len(ours) == len(decoded) == len(texts)):
        return [f"record counts differ: corpus {len(texts)}, peer {len(peer_lines)}, "
                f"moec {len(ours)}, decoded {len(decoded)}"]
    failures = []
    for i, text in enumerate(texts):
        peer = json.loads(peer_lines[i])
        mine = [int(x) for x in ours[i].split(",")] if ours[i] else []
        shown = repr(text[:60])
        if mine != peer["ids"]:
            first = next((k for k, (a, b) in enumerate(zip(mine, peer["ids"])) if a != b),
                         min(len(mine), len(peer["ids"])))
            failures.append(f"text {i} {shown}: ids differ at {first}: moec "
                            f"{mine[first:first + 6]}, peer {peer['ids'][first:first + 6]}")
            continue
        if decoded[i] != peer["text_hex"]:
            failures.append(f"text {i} {shown}: decoding differs: moec "
                            f"{bytes.fromhex(decoded[i])[:60]!r}, peer "
                            f"{bytes.fromhex(peer['text_hex'])[:60]!r}")
        elif case["kind"] == "byte-level" and bytes.fromhex(decoded[i]) != sanitized(text):
            failures.append(f"text {i} {shown}: does not round-trip")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moec", required=True)
    parser.add_argument("--peers", required=True, help="directory with node_modules")
    parser.add_argument("--case", help="run only cases whose name contains this")
    args = parser.parse_args()
    texts = corpus.records()
    shutil.copyfile(os.path.join(HERE, "peer.mjs"), os.path.join(args.peers, "peer.mjs"))
    failed = False
    with tempfile.TemporaryDirectory() as work:
        corpus_path = os.path.join(work, "corpus.bin")
        with open(corpus_path, "wb") as f:
            f.write(b"\0".join(texts) + b"\0")
        for case in cases(args.peers, work):
            if args.case and args.case not in case["name"]:
                continue
            failures = check_case(case, args, corpus_path, texts, work)
            status = "ok" if not failures else f"{len(failures)} FAILURES"
            print(f"{case['name']}: {len(texts)} texts, {status}")
            for line in failures:
                print("  " + line)
            failed |= bool(failures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
