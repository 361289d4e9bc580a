#!/usr/bin/env bash
# Writes a small moe100m-physics checkpoint with random weights (the same
# architecture as AlexWortega/moe100m-physics-tinybpe, smaller), compiles it
# with moec and runs the executable: its build info, a greedy continuation
# of a prompt as token ids, and a short benchmark; then the same model
# compiled for AArch64, run under qemu-aarch64.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/build/examples/physics"
mkdir -p "$out"

echo "== writing a random-weight physics checkpoint to $out/model"
/usr/bin/python3 "$root/test/reference/make_fixture.py" --out "$out/model" \
  --preset tiny --seed 1 --set d_model=128 --set n_layers=4 --set vocab_size=512 \
  --set n_q_heads=4 --set head_dim=32 --set rope_partial=16 --set d_ff=192 \
  --set n_routed_experts=8 --set mup_base_d=96

echo "== moec compile $out/model -o $out/physics"
"$root/build/bin/moec" compile "$out/model" -o "$out/physics"

echo "== $out/physics --info"
"$out/physics" --info
echo "== $out/physics --tokens 1,2,3,4,5 -n 24"
"$out/physics" --tokens 1,2,3,4,5 -n 24
echo "== $out/physics --bench --prompt-len 64 --gen 32"
"$out/physics" --bench --prompt-len 64 --gen 32

# The same model for AArch64, run under user-mode emulation: the tokens must
# be the same as above.
echo "== moec compile $out/model -o $out/physics-aarch64 --target=aarch64"
"$root/build/bin/moec" compile "$out/model" -o "$out/physics-aarch64" --target=aarch64 -q
echo "== qemu-aarch64 -L /usr/aarch64-linux-gnu $out/physics-aarch64 --tokens 1,2,3,4,5 -n 24"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/physics-aarch64" --tokens 1,2,3,4,5 -n 24
