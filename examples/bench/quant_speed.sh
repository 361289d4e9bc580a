#!/usr/bin/env bash
# Packed weights, f32 inputs against int8 inputs (not a CI test): the table
# in docs/quantization.md.
#
# Writes a random-weight SSMoELM checkpoint of the published size (packed as
# published: 1-bit routed experts and inner V/O, 4-bit the rest) and its f32
# twin, compiles them and the bundled kjv model at each precision, and runs
# --bench (prompt 128, generate 64, 5 repetitions) on one thread and on two.
#
#   examples/bench/quant_speed.sh [work-dir]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-$root/build/bench/quant-speed}"
moec="$root/build/bin/moec"
mkdir -p "$work"

if [[ ! -f "$work/ssmoelm/model.safetensors" ]]; then
  /usr/bin/python3 "$root/test/reference/ssmoelm_model.py" fixture \
    --out "$work/ssmoelm" --preset full --seed 1 > /dev/null
fi
if [[ ! -f "$work/ssmoelm-f32/model.safetensors" ]]; then
  /usr/bin/python3 "$root/test/reference/ssmoelm_model.py" dequantize \
    --model "$work/ssmoelm" --out "$work/ssmoelm-f32" > /dev/null
fi

# name | model directory | moec flags
builds=(
  "ssmoelm (packed), f32 inputs|$work/ssmoelm|--activations=f32"
  "ssmoelm (packed), int8 inputs|$work/ssmoelm|--activations=int8"
  "ssmoelm f32 twin|$work/ssmoelm-f32|--family=ssmoelm"
  "kjv f32|$root/examples/kjv/model|"
  "kjv q8, int8 inputs|$root/examples/kjv/model|--quant=q8"
  "kjv q8, f32 inputs|$root/examples/kjv/model|--quant=q8 --activations=f32"
  "kjv q4, int8 inputs|$root/examples/kjv/model|--quant=q4"
  "kjv q4, f32 inputs|$root/examples/kjv/model|--quant=q4 --activations=f32"
)
echo "| model | weights | prefill 1 / 2 threads | decode 1 / 2 threads |"
echo "|---|---:|---:|---:|"
for entry in "${builds[@]}"; do
  IFS='|' read -r name model flags <<< "$entry"
  exe="$work/exe"
  # shellcheck disable=SC2086 # flags are words
  "$moec" compile "$model" -o "$exe" -q $flags
  row=()
  for threads in 1 2; do
    row+=("$("$exe" --bench --prompt-len 128 --gen 64 --repeat 5 -t "$threads" --json |
      /usr/bin/python3 -c 'import json, sys; d = json.load(sys.stdin); print("%.0f %.0f" % (d["prefill_tokens_per_s"], d["decode_tokens_per_s"]))')")
  done
  read -r p1 d1 <<< "${row[0]}"
  read -r p2 d2 <<< "${row[1]}"
  printf '| %s | %.2f MB | %s / %s | %s / %s |\n' "$name" \
    "$(echo "$(stat -c %s "$exe.weights") / 1000000" | bc -l)" "$p1" "$p2" "$d1" "$d2"
done
