#!/usr/bin/env bash
# Build the air-gapped base image: Debian bookworm + Python 3.11 from debootstrap, imported with podman.
# Needs no container registry, only a Debian mirror. `bentoml containerize` then builds on top of it
# (bentofile.yaml: docker.base_image, set by build.sh --offline).
#
#   deploy/image/base-image.sh [--name localhost/askdb-base:bookworm-py311] [--extra-ca-certs DIR]
#                              [--mirror URL] [--force]
#
# --extra-ca-certs DIR: every *.crt in DIR is trusted inside the image (a corporate TLS proxy's CA);
#   without it, nothing in the image build can download from PyPI behind such a proxy.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=oci-env.sh
source "$here/oci-env.sh"

name="${ASKDB_BASE_IMAGE:-localhost/askdb-base:bookworm-py311}"
ca_dir=""
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --extra-ca-certs) ca_dir="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "base-image.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -n "$ca_dir" ] && ! compgen -G "$ca_dir/*.crt" >/dev/null; then
  echo "base-image.sh: --extra-ca-certs $ca_dir holds no *.crt file" >&2; exit 2
fi

if [ "$force" = 0 ] && "${PODMAN[@]}" image exists "$name"; then
  echo "base image $name exists (--force rebuilds it)"; exit 0
fi

rootfs="$(mktemp -d "$ASKDB_OCI_ROOT/tmp/rootfs.XXXXXX")"
# --one-file-system: never follow into a /proc that an interrupted debootstrap left mounted.
trap 'rm -rf --one-file-system "$rootfs"' EXIT
chmod 755 "$rootfs"  # it becomes the image's /: mktemp's 0700 would lock the non-root user out
# minbase + what BentoML's Dockerfile needs: python3 with venv/pip (it pip-installs uv), CA bundle.
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$rootfs" "$mirror"

if [ -n "$ca_dir" ]; then
  cp "$ca_dir"/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates
fi
# BentoML's Dockerfile runs `pip install uv` into the system Python; Debian refuses that (PEP 668).
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
# No package caches or lists in the image: smaller, and nothing from the build host.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log

# uv must use the system CA store (which holds the extra CAs), not its bundled roots (UV_NATIVE_TLS
# for the uv BentoML pins today, UV_SYSTEM_CERTS for newer ones).
# `podman import` sets no PATH, and BentoML's Dockerfile extends $PATH, so the image must define it.
# No uv/pip cache: buildah keeps it in the image (Docker's BuildKit mounts it outside instead).
tar -C "$rootfs" -c . | "${PODMAN[@]}" import \
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change "ENV UV_NATIVE_TLS=1" --change "ENV UV_SYSTEM_CERTS=1" \
  --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
  --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" \
  --change "ENV UV_NO_CACHE=1" --change "ENV PIP_NO_CACHE_DIR=1" \
  --change 'CMD ["/bin/bash"]' - "$name"
"${PODMAN[@]}" image ls "$name"
