"""The evaluation data and scorer: no test question leaks into the example bank, every gold query
runs, and the scorer compares result sets the way eval/README.md says."""

from __future__ import annotations

from eval import scorer
from pipeline import databases
from pipeline.select import tables_in


def test_test_set_and_bank_do_not_overlap():
    bank, tests = scorer.load_bank(), scorer.load_testset()
    assert len(tests) >= 40
    assert scorer.overlap(bank, tests) == []
    # the check itself catches a leak, phrased with different case and punctuation
    leaked = [{"question": tests[0]["question"].upper().rstrip("?"), "sql": "SELECT 1"}]
    assert scorer.overlap(bank + leaked, tests) == [tests[0]["id"]]


def test_test_set_mixes_difficulties_and_has_the_self_join():
    tests = scorer.load_testset()
    levels = {t["level"] for t in tests}
    assert levels == {"easy", "medium", "hard"}
    assert len({t["id"] for t in tests}) == len(tests)
    self_joins = [t for t in tests if "Employee e JOIN Employee m ON e.ReportsTo" in t["sql"]]
    assert len(self_joins) >= 3
    assert any(len(tables_in(t["sql"])) >= 3 for t in tests)  # multi-table joins


def test_every_gold_query_runs_and_returns_rows():
    db = databases.get("chinook")
    for item in scorer.load_testset() + scorer.load_bank():
        columns, rows = scorer.run_gold(db, item["sql"])
        assert columns and rows, item["question"]


def test_scorer_compares_result_sets():
    gold = [["Rock", 1297], ["Jazz", 130]]
    assert scorer.same_result([["Jazz", 130], ["Rock", 1297.0]], gold)  # order, int/float
    assert scorer.same_result([[130, "Jazz"], [1297, "Rock"]], gold)  # column order
    assert not scorer.same_result([["Rock", 1297]], gold)  # a missing row
    assert not scorer.same_result([["Rock", 1297], ["Jazz", 131]], gold)
    assert not scorer.same_result([["Jazz", 130], ["Rock", 1297]], gold, ordered=True)
    assert scorer.same_result([[5.747912]], [[5.7479120879]])  # float noise
    # extra predicted columns: wrong strictly, right leniently
    assert not scorer.same_result([["Rock", 1297, 1], ["Jazz", 130, 2]], gold)
    assert scorer.lenient_match([["Rock", 1297, 1], ["Jazz", 130, 2]], gold)
    assert not scorer.lenient_match([["Rock", 1, 2], ["Jazz", 3, 4]], gold)
