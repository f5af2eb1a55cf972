#!/usr/bin/env bash
# Builds the image Istio's WasmPlugin pulls with `url: oci://…`: a single layer holding only
# `plugin.wasm` (Istio's "compat" image format, accepted by every Istio version with WasmPlugin). Then
# checks the image really contains just that file with the expected digest, and records:
#   <out>/manifest-digest.txt     sha256:… of the image manifest in the archive: what Istio checks for an
#                                 oci:// module (WasmPlugin/TrafficExtension `sha256`, or `url: …@sha256:…`)
#   <out>/jwt_guard.wasm.sha256   sha256 of the module itself (the pin for an http:// or file:// module)
#   <out>/image.txt               image name and local image id (neither is a pin)
#   <out>/jwt-guard-oci.tar       the image as an OCI archive; push it unchanged with
#                                 `skopeo copy --preserve-digests oci-archive:<tar> docker://<registry>/<repo>:<tag>`
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

# The manifest digest, from the archive itself, checked end to end: the index names one manifest, the
# manifest blob hashes to that digest, and its only layer holds plugin.wasm with the module's sha256.
if [ "$cli" = podman ]; then
  arc="$ctx/archive"
  mkdir -p "$arc"
  tar -xf "$out/jwt-guard-oci.tar" -C "$arc"
  digest=$(python3 - "$arc" "$sum" <<'PY'
import hashlib, json, sys, tarfile, gzip, io
root, want = sys.argv[1], sys.argv[2]
def blob(d):
    algo, hexd = d.split(":", 1)
    data = open(f"{root}/blobs/{algo}/{hexd}", "rb").read()
    if hashlib.sha256(data).hexdigest() != hexd:
        sys.exit(f"blob {d} does not hash to its name")
    return data
index = json.load(open(f"{root}/index.json"))
if len(index["manifests"]) != 1:
    sys.exit(f"index has {len(index['manifests'])} manifests, expected 1")
digest = index["manifests"][0]["digest"]
manifest = json.loads(blob(digest))
layers = manifest["layers"]
if len(layers) != 1:
    sys.exit(f"manifest has {len(layers)} layers, expected 1")
data = blob(layers[0]["digest"])
if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
with tarfile.open(fileobj=io.BytesIO(data)) as t:
    got = hashlib.sha256(t.extractfile("plugin.wasm").read()).hexdigest()
if got != want:
    sys.exit(f"the manifest's layer holds plugin.wasm {got}, expected {want}")
print(digest)
PY
)
  echo "$digest" > "$out/manifest-digest.txt"
  echo "built $tag ($id): plugin.wasm sha256 $sum; archive $out/jwt-guard-oci.tar"
  echo "manifest digest $digest: the sha256 pin for WasmPlugin/TrafficExtension (url: oci://…@$digest),"
  echo "  valid for the archive pushed unchanged: skopeo copy --preserve-digests oci-archive:$out/jwt-guard-oci.tar docker://REGISTRY/REPO:TAG"
else
  rm -f "$out/manifest-digest.txt"
  echo "built $tag ($id): plugin.wasm sha256 $sum; archive $out/jwt-guard-oci.tar"
  echo "(docker save writes a docker archive: the manifest digest is the one \`docker push\` prints)"
fi
