"""`askdb examples review`: list, approve or reject proposed examples (pipeline/example_store.py).

    askdb examples review list [--db chinook] [--all]
    askdb examples review approve ID [--db chinook] [--by NAME]
    askdb examples review reject ID [--db chinook] [--by NAME]

Reads the same ASKDB_EXAMPLE_STORE, ASKDB_DATABASES and ASKDB_AUDIT_LOG as the service (run it with
the service's environment): an approval reaches every running worker at its next question, and
each decision is an audit record (key `cli:<user>`).
"""

from __future__ import annotations

import argparse
import getpass
import sys

from observability.audit import AuditLog, AuditUnavailable
from pipeline import databases
from pipeline.example_store import ProposalError, store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="askdb examples", description="review proposed examples")
    sub = ap.add_subparsers(dest="cmd", required=True)
    review = sub.add_parser("review", help="list / approve ID / reject ID")
    review.add_argument("action", choices=["list", "approve", "reject"])
    review.add_argument("id", nargs="?", help="the proposal (approve, reject)")
    review.add_argument("--db", default=databases.DEFAULT)
    review.add_argument("--all", action="store_true", help="list decided proposals too")
    review.add_argument("--by", default=f"cli:{getpass.getuser()}", help="who decides (audit trail)")
    args = ap.parse_args(argv)
    dialects = dict(databases.names())
    if args.db not in dialects:
        print(f"unknown database {args.db!r}; configured: {', '.join(dialects)}", file=sys.stderr)
        return 2
    try:
        if args.action == "list":
            for p in store().proposals(args.db, None if args.all else "pending"):
                print(f"{p.id}  {p.status:8}  {p.ts}  key={p.key or '-'}\n  Q: {p.question}\n  SQL: {p.sql}")
            return 0
        if not args.id:
            print(f"'{args.action}' needs the proposal ID (see: askdb examples review list)", file=sys.stderr)
            return 2
        decided = store().decide(args.db, args.id, args.action == "approve", args.by, dialects[args.db])
        AuditLog.from_env().append(
            "example", key=args.by, db=args.db, decision=decided.status, proposal=decided.id,
            question=decided.question, sql=decided.sql,
        )  # fmt: skip
    except (ProposalError, AuditUnavailable) as err:
        print(str(err), file=sys.stderr)
        return 1
    print(f"{decided.id} {decided.status}")
    return 0
