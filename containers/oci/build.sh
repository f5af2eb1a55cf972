#!/usr/bin/env bash
# Builds the image Istio's WasmPlugin pulls with `url: oci://…`: a single layer holding only
# `plugin.wasm` (Istio's "compat" image format, accepted by every Istio version with WasmPlugin). Then
# checks the image really contains just that file with the expected digest, and records:
#   <out>/jwt_guard.wasm.sha256   sha256 of the module (WasmPlugin `sha256:` pins it)
#   <out>/image.txt               image name and id
#   <out>/jwt-guard-oci.tar       the image as an OCI archive, for `skopeo copy` / `podman push` elsewhere
#
# usage: containers/oci/build.sh <module.wasm> <image tag> [podman|docker] <out dir>
set -euo pipefail
wasm=$1
tag=$2
cli=${3:-podman}
out=${4:-target/oci}
mkdir -p "$out"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$wasm" "$ctx/plugin.wasm"
printf 'FROM scratch\nCOPY plugin.wasm ./\n' > "$ctx/Containerfile"
"$cli" build -q -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
sum=$(sha256sum "$wasm" | cut -d' ' -f1)
echo "$sum  jwt_guard.wasm" > "$out/jwt_guard.wasm.sha256"

# Verify: the image's filesystem is exactly plugin.wasm, byte for byte the module.
cid=$("$cli" create "$tag" /plugin.wasm)
"$cli" export "$cid" > "$ctx/fs.tar"
"$cli" rm "$cid" >/dev/null
files=$(tar -tf "$ctx/fs.tar" | grep -v '/$' | sort)
if [ "$files" != "plugin.wasm" ]; then
  echo "image $tag holds unexpected files: $files" >&2
  exit 1
fi
got=$(tar -xOf "$ctx/fs.tar" plugin.wasm | sha256sum | cut -d' ' -f1)
if [ "$got" != "$sum" ]; then
  echo "plugin.wasm in $tag has sha256 $got, expected $sum" >&2
  exit 1
fi
id=$("$cli" image inspect --format '{{.Id}}' "$tag")
printf '%s %s\n' "$tag" "$id" > "$out/image.txt"
rm -f "$out/jwt-guard-oci.tar"
if [ "$cli" = podman ]; then
  "$cli" save --format oci-archive -o "$out/jwt-guard-oci.tar" "$tag"
else
  "$cli" save -o "$out/jwt-guard-oci.tar" "$tag"
fi
echo "built $tag ($id): plugin.wasm sha256 $sum; archive $out/jwt-guard-oci.tar"
