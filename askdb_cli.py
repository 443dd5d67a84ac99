"""`askdb` command: a thin dispatcher; each subcommand lives in its own module.

askdb report LOGDIR [...]     summarise a quality log or load test (observability/report.py)
askdb audit verify PATH       check the audit trail's hash chain (observability/audit.py)
askdb examples review ...     list, approve or reject proposed examples (pipeline/example_review.py)
askdb config [--readme]       every ASKDB_* setting: value, default, source (settings.py)
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> module with `main(argv) -> int`; imported only when used (matplotlib is slow)
COMMANDS = {
    "report": "observability.report",
    "audit": "observability.audit",
    "examples": "pipeline.example_review",
    "config": "settings",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: askdb {" + ",".join(sorted(COMMANDS)) + "} ...", file=sys.stderr)
        for name, module in sorted(COMMANDS.items()):
            print(f"  {name:10} {module}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return int(importlib.import_module(COMMANDS[argv[0]]).main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
