#!/usr/bin/env bash
# cmake --install gives a moec that works wherever its prefix is moved:
# installs <build> into one prefix, moves the tree, then from the new place
# compiles the bundled KJV model for this machine and for AArch64 (run under
# qemu), and embeds it in a C program through --emit=lib, using only the
# installed headers, runtime and example.
#
#   relocatable_install.sh <build dir> <source dir>
set -euo pipefail
build=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/first" > /dev/null
mv "$work/first" "$work/moved"
prefix=$work/moved
moec=$prefix/bin/moec

fail() { echo "FAIL: $*" >&2; exit 1; }

# Only what a user needs: the tools, the runtime, its headers, the example.
extra=$(cd "$prefix" && find . -type f | sort | grep -v -E \
  '^\./bin/(moec|moe-opt)$|^\./include/(HalideRuntime\.h|moert/[a-z_]+\.h)$|^\./lib/(aarch64/)?libmoert(_main)?\.a$|^\./share/moec/examples/embed/complete\.c$' || true)
[[ -z $extra ]] || fail "unexpected installed files: $extra"
echo "ok  installed: $(cd "$prefix" && find . -type f | wc -l) files"

# The moved moec names its own runtime, not the build tree's.
"$moec" targets | grep -q "runtime: $prefix/lib$" || fail "moec targets does not name $prefix/lib"
"$moec" targets | grep -q "runtime: $prefix/lib/aarch64$" || fail "no aarch64 runtime under $prefix"
echo "ok  moec targets names the runtime under the moved prefix"

model=$src/examples/kjv/model
prompt="And it came to pass"
"$moec" compile "$model" -o "$work/kjv" -q
"$work/kjv" -p "$prompt" -n 24 2> /dev/null > "$work/host.txt"
grep -q "^$prompt.\{40,\}" "$work/host.txt" || fail "the executable wrote: $(cat "$work/host.txt")"
echo "ok  host executable: $(cat "$work/host.txt")"

"$moec" compile "$model" -o "$work/kjv-arm" --target=aarch64 -q
qemu-aarch64 -L /usr/aarch64-linux-gnu "$work/kjv-arm" -p "$prompt" -n 24 2> /dev/null |
  diff "$work/host.txt" - || fail "the AArch64 executable differs"
echo "ok  aarch64 executable (qemu) prints the same text"

"$moec" compile "$model" --emit=lib -o "$work/lib/kjv" -q
cc -std=c11 -Wall -Wextra -Werror -DMODEL_HEADER='"kjv.h"' -DMODEL_OPEN=kjv_open \
  "$prefix/share/moec/examples/embed/complete.c" -I"$work/lib" "$work/lib/libkjv.a" \
  -lm -lpthread -ldl -o "$work/complete"
"$work/complete" "$work/lib/kjv.weights" "$prompt" 24 | diff "$work/host.txt" - ||
  fail "the embedded model differs from the executable"
echo "ok  --emit=lib: the installed example embeds the model and prints the same text"

# The full runtime API is installed too: a program including moert/moert.h
# builds against the prefix alone.
printf '#include "moert/moert.h"\nint main(void) { return moert_status_name(MOERT_STATUS_OK)[0] == 0; }\n' \
  > "$work/api.c"
cc -std=c11 -Wall -Werror -I"$prefix/include" "$work/api.c" "$prefix/lib/libmoert.a" \
  -lm -lpthread -o "$work/api"
"$work/api"
echo "ok  moert/moert.h and libmoert.a from the prefix"
echo "relocatable install: all checks passed"
