#!/usr/bin/python3
"""Compiles the tiny model fuzz_cli runs: a physics fixture with a byte-level
tokenizer, as a library (moec compile --emit=lib).

    make_cli_model.py --moec MOEC --out DIR     # writes DIR/lib/libtiny.a, tiny.weights
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import fixture_tokenizers  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moec", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    model = os.path.join(args.out, "model")
    subprocess.run([sys.executable, os.path.join(HERE, "..", "reference", "make_fixture.py"),
                    "--out", model, "--preset", "tiny", "--seed", "1",
                    "--set", "vocab_size=600"], check=True, stdout=subprocess.DEVNULL)
    fixture_tokenizers.byte_level(model)
    subprocess.run([args.moec, "compile", model, "--emit=lib",
                    "-o", os.path.join(args.out, "lib", "tiny"), "-q"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
