#!/usr/bin/env bash
# podman on askdb's own store, with the flags this kind of machine needs (ENVIRONMENT.md):
#   deploy/image/podman.sh run --rm --network host --ulimit nofile=20000:20000 \
#     --ulimit nproc=4096:4096 -e PORT=3000 localhost/askdb:<version>-cpu
set -euo pipefail
# shellcheck source=oci-env.sh
source "$(dirname "$0")/oci-env.sh"
exec "${PODMAN[@]}" "$@"
