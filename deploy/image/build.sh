#!/usr/bin/env bash
# Build the askdb Bento and (unless --bento-only) its OCI image, for one flavour.
#
#   deploy/image/build.sh [--flavour cpu|cuda] [--offline] [--image NAME:TAG] [--version V]
#                         [--extra-ca-certs DIR] [--bento-only]
#
# Standard path (default): `bentoml containerize` with its default backend (Docker) and
#   python:3.11-slim, as BentoML users expect.
# Offline path (--offline, or ASKDB_IMAGE_OFFLINE=1): no Docker daemon and no registry. The base image
#   comes from debootstrap (base-image.sh) and buildah builds on top of it in askdb's own vfs store
#   (oci-env.sh); run the result with podman.
# Prints `bento: TAG`, one `model: TAG` per packed model and, when containerized, `image: NAME`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

flavour="${ASKDB_FLAVOUR:-cpu}"
offline="${ASKDB_IMAGE_OFFLINE:-0}"
image=""
version=""
ca_dir="${ASKDB_EXTRA_CA_CERTS:-}"
bento_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --flavour) flavour="$2"; shift 2 ;;
    --offline) offline=1; shift ;;
    --image) image="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --extra-ca-certs) ca_dir="$2"; shift 2 ;;
    --bento-only) bento_only=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$flavour" in cpu|cuda) ;; *) echo "build.sh: --flavour must be cpu or cuda" >&2; exit 2 ;; esac

BIN="${VENV:-$root/.venv}/bin"
base_image="${ASKDB_BASE_IMAGE:-localhost/askdb-base:bookworm-py311}"

# The CPU flavour packs torch's CPU wheel into the Bento (PyPI's torch is the CUDA build). pip's own
# configuration says where it comes from: a local wheel directory here, or set
# TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu where that index is reachable.
if [ "$flavour" = cpu ]; then
  wheel="$(sed -n 's#^ *- "\(build/wheels/torch-[^"]*\.whl\)"#\1#p' bentofile.yaml)"
  if [ ! -f "$wheel" ]; then
    version_="$(basename "$wheel" | cut -d- -f2)"  # e.g. 2.13.0+cpu
    "$BIN/pip" download --no-deps --dest build/wheels \
      ${TORCH_CPU_INDEX:+--index-url "$TORCH_CPU_INDEX"} "torch==$version_"
  fi
fi

bentofile=bentofile.yaml
if [ "$offline" = 1 ]; then
  bentofile="build/bentofile.$flavour-offline.yaml"
  "$BIN/python" "$here/variant.py" --flavour "$flavour" --base-image "$base_image" --out "$bentofile"
elif [ "$flavour" != cpu ]; then
  bentofile="build/bentofile.$flavour.yaml"
  "$BIN/python" "$here/variant.py" --flavour "$flavour" --out "$bentofile"
fi

tag="$("$BIN/bentoml" build -f "$bentofile" ${version:+--version "$version"} -o tag . | sed -n 's/^__tag__://p')"
"$BIN/python" "$here/describe.py" "$tag"
[ "$bento_only" = 1 ] && exit 0

image="${image:-askdb:${tag#*:}-$flavour}"
if [ "$offline" = 1 ]; then
  # shellcheck source=oci-env.sh
  source "$here/oci-env.sh"
  "$here/base-image.sh" --name "$base_image" ${ca_dir:+--extra-ca-certs "$ca_dir"}
  "$BIN/bentoml" containerize "$tag" -t "$image" --backend buildah \
    --opt storage-driver=vfs --opt isolation=chroot
  "${PODMAN[@]}" image ls "$image"
else
  # Extra backend flags (e.g. --platform linux/amd64) pass through BENTOML_CONTAINERIZE_ARGS.
  # shellcheck disable=SC2086
  "$BIN/bentoml" containerize "$tag" -t "$image" ${BENTOML_CONTAINERIZE_ARGS:-}
fi
echo "image: $image"
