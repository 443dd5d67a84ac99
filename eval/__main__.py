"""`python -m eval run --url URL [--ablation full no-examples no-repair] [--ids t01,t02] [--limit N]`,
`python -m eval run --in-process smollm2-135m-instruct:latest ...` (no server),
`python -m eval learn|poison [--url URL --key K --admin-key A | --in-process TAG]` (eval/learning.py),
`python -m eval retrieval` (what learn's prompts would show, no LLM: eval/retrieval.py),
`python -m eval calibration REPORT` (confidence definitions compared offline),
`python -m eval merge A.json B.json --out X.json` (runs of disjoint `--ids`, made in parallel) and
`python -m eval check` (bank and test set are disjoint, every gold query runs).
`run`, `learn`, `poison` and `check` take `--testset PATH`: a held-out set in the same format."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from eval import calibration, learning, runner, scorer
from pipeline import databases

TESTSET_HELP = "a test set in eval/testset's format (a held-out set) instead of the database's own"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="score the test set against a running service")
    r.add_argument("--url", default="http://127.0.0.1:3000")
    r.add_argument("--db", default="chinook")
    r.add_argument("--ablation", nargs="+", default=["full"], choices=sorted(runner.ABLATIONS))
    r.add_argument("--options", default="{}", help="JSON merged into every run's /ask options")
    r.add_argument("--ids", default="", help="comma-separated test ids (default: all)")
    r.add_argument("--limit", type=int, default=None)
    r.add_argument("--testset", type=Path, default=None, help=TESTSET_HELP)
    r.add_argument("--concurrency", type=int, default=4)
    r.add_argument("--out", default="eval/reports/latest.json")
    r.add_argument("--tag", default="", help="suffix for run labels (e.g. the model)")
    r.add_argument("--progress", default=None, help="in process: append each question's detail here")
    r.add_argument(
        "--in-process",
        metavar="MODEL_TAG",
        default=None,
        help="no server: load MODEL_TAG and the embedder here (eval/inprocess.py)",
    )
    for name, what in [
        ("learn", "accuracy on the test half before and after approving the training half's gold pairs"),
        ("poison", "accuracy before and after 50 malicious, unapproved proposals"),
    ]:
        x = sub.add_parser(name, help=what)
        x.add_argument("--url", default=None, help="a running service (else --in-process)")
        x.add_argument("--key", default=None, help="API key for /ask and /feedback")
        x.add_argument("--admin-key", default=None, help="an admin key for /examples (learn)")
        x.add_argument("--in-process", metavar="MODEL_TAG", default=None)
        x.add_argument("--db", default="chinook")
        x.add_argument("--ablation", default="full", choices=sorted(runner.ABLATIONS))
        x.add_argument("--options", default="{}")
        x.add_argument("--ids", default="", help="comma-separated test ids (default: all)")
        x.add_argument("--limit", type=int, default=None)
        x.add_argument("--testset", type=Path, default=None, help=TESTSET_HELP)
        x.add_argument("--seed", type=int, default=0, help="learn: the train/test split")
        if name == "learn":
            x.add_argument(
                "--paired",
                type=Path,
                default=None,
                metavar="VARIANTS",
                help="test on these variants (eval/testset/<db>-variants.yaml), train on their originals",
            )
        x.add_argument(
            "--before",
            default=None,
            metavar="REPORT",
            help="take the before-scores from this `run` report (same code and options)",
        )
        x.add_argument("--concurrency", type=int, default=4)
        x.add_argument("--out", default=f"eval/reports/latest-{name}.json")
    k = sub.add_parser("check", help="validate the bank and the test set")
    k.add_argument("--db", default="chinook")
    k.add_argument("--testset", type=Path, default=None, help=TESTSET_HELP)
    q = sub.add_parser("retrieval", help="what learn's test prompts would show (embeddings only)")
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    c = sub.add_parser("calibration", help="confidence definitions compared on in-process reports")
    c.add_argument("reports", nargs="+", help="`run` reports (.json) or --progress files (.jsonl)")
    m = sub.add_parser("merge", help="one report from `run` reports of disjoint --ids (parallel runs)")
    m.add_argument("reports", nargs="+")
    m.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "retrieval":
        from eval import inprocess, retrieval  # loads torch: only when asked for

        rows = retrieval.run(inprocess.embeddings(), args.seeds)
        for row in rows:
            print(json.dumps(row))
        return 0
    if args.cmd == "calibration":
        return _calibration([Path(r) for r in args.reports])
    if args.cmd == "merge":
        merged = runner.merge([json.loads(Path(r).read_text()) for r in args.reports])
        print(runner.table([merged]))
        print(calibration.table(merged))
        runner.write(merged, Path(args.out))
        return 0
    if args.cmd in ("learn", "poison"):
        return _learning(args)

    if args.cmd == "check":
        bank, tests = scorer.load_bank(args.db), scorer.load_testset(args.db, args.testset)
        bad = scorer.overlap(bank, tests)
        broken = scorer.broken_gold(databases.get(args.db), tests)
        print(f"bank {len(bank)} examples, test set {len(tests)} questions, overlap: {bad or 'none'}")
        print(f"gold queries that fail or return no rows: {broken or 'none'}")
        return 1 if bad or broken else 0

    extra = json.loads(args.options)
    ids = [i for i in args.ids.split(",") if i] or None
    reports = []
    for name in args.ablation:
        label = f"{name}{args.tag}"
        options = {**runner.ABLATIONS[name], **extra}
        if args.in_process:
            from eval import inprocess

            progress = Path(args.progress) if args.progress else None
            rep = inprocess.run(
                args.in_process, label=label, options=options, ids=ids, db=args.db, progress=progress,
                testset=args.testset,
            )  # fmt: skip
        else:
            rep = runner.run(
                args.url,
                db=args.db,
                label=label,
                options=options,
                ids=ids,
                limit=args.limit,
                concurrency=args.concurrency,
                testset=args.testset,
            )
        reports.append(rep)
        print(runner.table([rep]).splitlines()[-1], flush=True)
    print(runner.table(reports))
    for rep in reports:
        print(calibration.table(rep))
    runner.write(reports if len(reports) > 1 else reports[0], Path(args.out))
    print(f"report: {args.out}")
    return 0


def _learning(args: argparse.Namespace) -> int:
    if not args.url and not args.in_process:
        print("give --url URL (a running service) or --in-process MODEL_TAG", file=sys.stderr)
        return 2
    if args.url:
        target: learning.Target = learning.ServiceTarget(
            args.url, args.key, args.admin_key, args.db, args.concurrency
        )
    else:
        target = learning.InProcessTarget(args.in_process, args.db, learning.temporary_store())
    tests = scorer.load_testset(args.db, args.testset)
    items = runner.select(tests, [i for i in args.ids.split(",") if i], args.limit)
    options = {**runner.ABLATIONS[args.ablation], **json.loads(args.options)}
    before = (lambda: _report(Path(args.before))) if args.before else None
    if args.cmd == "learn" and args.paired:
        variants = scorer.load_testset(args.db, args.paired)
        result = learning.learn_paired(target, variants, tests, options)
    elif args.cmd == "learn":
        result = learning.learn(target, items, options, args.seed, before)
    else:
        result = learning.poison(target, items, options, before_from=before)
    print(runner.table(result["reports"]))
    summary = {k: v for k, v in result.items() if k != "reports"}
    print(json.dumps(summary, indent=1))
    runner.write(result, Path(args.out))
    print(f"report: {args.out}")
    return 0


def _calibration(paths: list[Path]) -> int:
    """Each confidence definition over the whole set, then over each half of learn's seed-0 split
    (a definition chosen on one half has to hold on the other)."""
    details = []
    for path in paths:
        if path.suffix == ".jsonl":
            details += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            details += json.loads(path.read_text())["questions"]
    train, test = learning.split(details, 0)
    for name, part in [("all", details), ("half A", train), ("half B", test)]:
        print(f"{name}: {len(part)} questions")
        for row in calibration.compare(part):
            cells = " ".join(f"{r['bucket']}:{r['n']}/{r['accuracy']}" for r in row["rows"])
            top = f"top ({row['top_bucket']}) / overall {row['top_to_overall']}"
            print(f"  {row['definition']:<42} ECE {row['ece']} {top} | {cells}")
    return 0


def _report(path: Path, wait_s: float = 7200.0) -> dict:
    """The `run` report at `path`, waiting for it (a run of the whole set may still be going)."""
    deadline = time.monotonic() + wait_s
    while not path.is_file():
        if time.monotonic() > deadline:
            raise SystemExit(f"no report at {path} after {wait_s:.0f} s")
        time.sleep(10)  # a file another process writes once: nothing to subscribe to
    return json.loads(path.read_text())


def cli(argv: list[str] | None = None) -> int:
    """`main`, with a test set that cannot be scored said in one line (exit 2), not a traceback."""
    try:
        return main(argv)
    except scorer.TestsetError as exc:
        print(f"eval: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
