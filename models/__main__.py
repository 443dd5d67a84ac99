"""`python -m models import SOURCE --name NAME` and `python -m models import --defaults`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from models.errors import ModelImportError

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import a model into the BentoML model store")
    imp.add_argument("source", nargs="?", help="hub id (org/name), model directory, or .gguf file")
    imp.add_argument("--name", help="store name (default: derived from the source)")
    imp.add_argument("--task", choices=["text-generation", "feature-extraction"])
    imp.add_argument("--revision", help="hub revision (branch, tag or commit)")
    imp.add_argument("--defaults", action="store_true", help="import the embedded default models")
    imp.add_argument("--force", action="store_true", help="import again even if an identical copy exists")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("list", help="stored models with their labels and metadata")
    return parser


def _list() -> int:
    import bentoml

    for model in sorted(bentoml.models.list(), key=lambda m: str(m.tag)):
        meta, labels = model.info.metadata, model.info.labels
        label_text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        print(
            f"{model.tag}  {meta.get('task', '?')}  {meta.get('architecture', '?')}  "
            f"{meta.get('parameters', 0) / 1e6:.1f}M  {meta.get('dtype', '?')}  [{label_text}]"
        )
    return 0


def _default_name(source: str) -> str:
    base = os.path.basename(source.rstrip("/")).removesuffix(".gguf")
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in base).lower().strip("-.") or "model"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # transformers and bentoml are chatty on import; the CLI prints its own one-line results
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if args.command == "list":
        return _list()
    from models.importer import import_defaults, import_model

    try:
        if args.defaults:
            results = import_defaults(progress=not args.quiet)
        elif args.source:
            name = args.name or _default_name(args.source)
            results = [
                import_model(
                    args.source,
                    name,
                    task=args.task,
                    revision=args.revision,
                    progress=not args.quiet,
                    force=args.force,
                )
            ]
        else:
            print("error: give a SOURCE or --defaults", file=sys.stderr)
            return EXIT_BAD_INPUT
    except ModelImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for model, created in results:
        state = "imported" if created else "already in store"
        meta = model.info.metadata
        print(f"{model.tag} {state} ({meta.get('task')}, {meta.get('architecture')}, {meta.get('dtype')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
