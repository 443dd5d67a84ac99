#!/usr/bin/env bash
# Runs once in the image build (bentofile.yaml docker.setup_script), as root, after the Bento is
# copied in. The packed torch wheel is installed by now; dropping it saves ~190 MB where the build
# squashes its steps into one layer (buildah, the offline path).
set -euo pipefail
rm -f "$BENTO_PATH"/env/python/wheels/*.whl
