#!/usr/bin/env bash
# Builds the dynamo-kv image offline: a statically linked release binary (glibc static-pie; no musl target or other
# toolchain needed) copied into a `FROM scratch` image. Usage: bash docker/build-image.sh [tag], default
# dynamo-kv:local (the tag docker-compose.yml uses).
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-dynamo-kv:local}
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" --target-dir target/static
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "target/static/$target/release/dynamo-kv" "$context/dynamo-kv"
mkdir -p "$context/data"
if ldd "$context/dynamo-kv" 2>&1 | grep -q '=>'; then
  echo "the binary is not statically linked" >&2
  exit 1
fi
docker build -q -f docker/Dockerfile -t "$tag" "$context"
echo "built image $tag"
