#!/usr/bin/env bash
# The main job of README.md: compiles the bundled KJV model (a 3.3M-parameter
# moe100m-physics model trained by examples/kjv/train.py, committed with its
# tokenizer) into a native executable and has it write a paragraph.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/build/examples/kjv"
mkdir -p "$out"
kjv="$out/kjv"

echo "== moec compile examples/kjv/model -o $kjv"
"$root/build/bin/moec" compile "$root/examples/kjv/model" -o "$kjv"

echo "== $kjv --info"
"$kjv" --info

# Greedy decoding makes a small model loop on phrases; sampling at 0.8 with
# the 40 likeliest tokens reads better. The seed makes the paragraph the
# same on every run.
echo "== $kjv -p \"And it came to pass\" -n 160 --temp 0.8 --top-k 40 -s 3"
"$kjv" -p "And it came to pass" -n 160 --temp 0.8 --top-k 40 -s 3
echo
echo "== $kjv --bench"
"$kjv" --bench
