#!/usr/bin/env bash
# Prepares, on a machine without a GPU, everything a GPU machine needs to
# check the CUDA target in one short run (it needs no moec, Halide or
# compiler there): every family's fixture compiled for --target=cuda, the
# logits and greedy tokens of the same model's host build as the expected
# answers, the host build's kernel traces (--trace-kernels: every kernel
# call's outputs) to find the first kernel a failing CUDA run departs at,
# builds of two fixtures that each change one thing about the device code
# (see `variants` below), and three full-size models with their host --bench
# numbers.
#
#   examples/cuda/make_device_kit.sh [kit-dir]      (default build/device-kit)
#   then, on the GPU machine:  python3 examples/cuda/run_device_kit.py build/device-kit
#
# The kit stays under the device tool's 64 MiB: fixtures are tiny; the full
# sizes are SSMoELM as published (12 MB of packed weights) and the bundled
# kjv model at q8.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
kit="${1:-$root/build/device-kit}"
moec="$root/build/bin/moec"
py=/usr/bin/python3
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rm -rf "$kit"
mkdir -p "$kit"

prompts="1,2,3,4,5,6,7/9/42,0,42,0,17,33,2,2,2,71,11"
# name | family | preset | seed | moec flags
fixtures=(
  "physics|physics|tiny|1|"
  "physics-q4|physics|tiny|1|--quant=q4"
  "slimmoe|slimmoe|tiny|1|"
  "moonlight|moonlight|tiny|7|"
  "linnet|linnet|tiny|3|"
  "ssmoelm|ssmoelm|tiny|1|"
  "ssmoelm-int8|ssmoelm|tiny|1|--activations=int8"
)
declare -A models # fixture name -> its checkpoint, for the variants below
for entry in "${fixtures[@]}"; do
  IFS='|' read -r name family preset seed flags <<< "$entry"
  model="$work/$family-$preset-$seed"
  models[$name]="$model"
  if [[ ! -d "$model" ]]; then
    PYTHONPATH="$root/test/e2e:$root/test/reference" $py -c "
import families
families.get('$family').write_checked_fixture('$model', '$preset', $seed,
    families.parse_prompts('$prompts'), {})" > /dev/null
  fi
  mkdir -p "$kit/$name"
  # shellcheck disable=SC2086
  "$moec" compile "$model" -o "$kit/$name/cuda" --target=cuda -q \
    --trace-kernels $flags
  # shellcheck disable=SC2086
  "$moec" compile "$model" -o "$work/$name-host" --target=host -q \
    --trace-kernels $flags
  i=0
  IFS='/' read -ra list <<< "$prompts"
  for tokens in "${list[@]}"; do
    "$work/$name-host" --tokens "$tokens" --logits-out "$kit/$name/prefill-$i.f32"
    "$work/$name-host" --tokens "$tokens" --decode --logits-out "$kit/$name/decode-$i.f32"
    "$work/$name-host" --tokens "$tokens" -n 8 > "$kit/$name/greedy-$i.txt"
    "$work/$name-host" --tokens "$tokens" --logits-out /dev/null \
      --dump-activations "$kit/$name/trace-prefill-$i"
    "$work/$name-host" --tokens "$tokens" --decode --logits-out /dev/null \
      --dump-activations "$kit/$name/trace-decode-$i"
    echo "$tokens" > "$kit/$name/tokens-$i.txt"
    i=$((i + 1))
  done
  echo "fixture $name: $(du -sh "$kit/$name" | cut -f1)"
done

# Builds that each change one thing about the device code, for the runner
# to rerun a failing prompt with: Halide's debug runtime (it synchronises
# after every launch and checks each call) and strict_float (no fast-math
# rewrites of float arithmetic). Target descriptions derived from the cuda
# target's; a variant whose weight file equals cuda.weights runs on that one
# (the kit stays small).
variants=(
  "debug|-debug"
  "strict|-strict_float"
)
for entry in "${variants[@]}"; do
  IFS='|' read -r variant features <<< "$entry"
  $py - "$root/targets/cuda/target.json" "$work/cuda-$variant.json" \
    "$variant" "$features" <<'PY'
import json, sys
source, dest, variant, features = sys.argv[1:]
target = json.load(open(source))
target["name"] = "cuda-" + variant
target["halide_target"] += features
json.dump(target, open(dest, "w"), indent=1)
PY
  for name in physics moonlight; do
    "$moec" compile "${models[$name]}" -o "$kit/$name/cuda-$variant" \
      --target="$work/cuda-$variant.json" -q
    if cmp -s "$kit/$name/cuda-$variant.weights" "$kit/$name/cuda.weights"; then
      rm "$kit/$name/cuda-$variant.weights"
    fi
  done
  echo "variant $variant: $(du -ch "$kit"/*/cuda-"$variant"* | tail -1 | cut -f1)"
done

# Full sizes, for --bench beside this machine's host build.
"$py" "$root/test/reference/ssmoelm_model.py" fixture --out "$work/ssmoelm-full" \
  --preset full --seed 1 > /dev/null
# name | model | moec flags
benches=(
  "bench-ssmoelm|$work/ssmoelm-full|"
  "bench-ssmoelm-int8|$work/ssmoelm-full|--activations=int8"
  "bench-kjv-q8|$root/examples/kjv/model|--quant=q8"
)
for entry in "${benches[@]}"; do
  IFS='|' read -r name model flags <<< "$entry"
  mkdir -p "$kit/$name"
  # shellcheck disable=SC2086
  "$moec" compile "$model" -o "$kit/$name/cuda" --target=cuda -q $flags
  # shellcheck disable=SC2086
  "$moec" compile "$model" -o "$work/$name-host" --target=host -q $flags
  "$work/$name-host" --bench --json -t 1 > "$kit/$name/host-bench-1t.json"
  "$work/$name-host" --bench --json -t 2 > "$kit/$name/host-bench-2t.json"
  echo "bench $name: $(du -sh "$kit/$name" | cut -f1)"
done
echo "kit: $kit ($(du -sh "$kit" | cut -f1))"
