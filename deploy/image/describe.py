"""Print a built Bento's tag and the models packed with it: `python deploy/image/describe.py TAG`."""

from __future__ import annotations

import sys

import bentoml


def packed_models(tag: str) -> list[str]:
    """Every model tag the Bento carries, from its services (BentoModel attributes) and top level."""
    info = bentoml.get(tag).info
    tags = {str(m.tag) for m in info.models}
    for service in info.services:
        tags.update(str(m.tag) for m in service.models)
    return sorted(tags)


def main(argv: list[str]) -> int:
    bento = bentoml.get(argv[0])
    print(f"bento: {bento.tag}")
    for tag in packed_models(argv[0]):
        print(f"model: {tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
