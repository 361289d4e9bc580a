#!/usr/bin/env bash
# Full-size moe100m-physics benchmark (not a CI test: ~1 GB of weights).
#
# Writes a random-weight checkpoint of the published size (vocab 512,
# d_model 640, 14 layers, GQA 10/2 x 64, 8 experts of 1024 + a shared
# expert, 246.2M parameters), compiles it with a cold kernel cache and again
# with a warm one, and runs --bench with every core and with one.
#
#   examples/bench/physics_full.sh [work-dir]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-$root/build/bench/physics-full}"
moec="$root/build/bin/moec"
mkdir -p "$work"

if [[ ! -f "$work/model/model.safetensors" ]]; then
  /usr/bin/python3 "$root/test/reference/make_fixture.py" --out "$work/model" \
    --preset full --seed 1
fi

# Seconds since `start` (nanoseconds), with millisecond precision.
elapsed() { local ns=$(( $(date +%s%N) - $1 )); printf '%d.%03d' $((ns / 1000000000)) $((ns / 1000000 % 1000)); }

cache="$work/kernel-cache"
rm -rf "$cache"
start=$(date +%s%N)
"$moec" compile "$work/model" -o "$work/physics" --kernel-cache="$cache" -q
cold=$(elapsed "$start")
start=$(date +%s%N)
"$moec" compile "$work/model" -o "$work/physics" --kernel-cache="$cache" -q
warm=$(elapsed "$start")

echo "compile (cold kernel cache): ${cold} s"
echo "compile (warm kernel cache): ${warm} s"
echo "executable: $(stat -c %s "$work/physics") bytes; weights: $(stat -c %s "$work/physics.weights") bytes"
"$work/physics" --info | head -8
echo "--- all cores"
"$work/physics" --bench --prompt-len 128 --gen 64 --repeat 3 --json
echo "--- one thread"
"$work/physics" --bench --prompt-len 128 --gen 64 --repeat 3 -t 1 --json
