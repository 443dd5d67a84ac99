"""The evaluation data and scorer: no test question leaks into the example bank, every gold query
runs, and the scorer compares result sets the way eval/README.md says."""

from __future__ import annotations

from eval import calibration, learning, poison, scorer
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


def test_learning_split_is_seeded_disjoint_and_keeps_every_level():
    items = scorer.load_testset()
    train, test = learning.split(items, seed=3)
    assert learning.split(items, seed=3) == (train, test)  # the same halves for the same seed
    assert learning.split(items, seed=4) != (train, test)
    ids = [i["id"] for i in train + test]
    assert sorted(ids) == sorted(i["id"] for i in items) and len(set(ids)) == len(ids)
    for level in ("easy", "medium", "hard"):
        a, b = (sum(i["level"] == level for i in half) for half in (train, test))
        assert abs(a - b) <= 1 and a and b


def test_poison_items_attack_the_test_questions():
    items = scorer.load_testset()
    bodies = poison.malicious(items, 50)
    assert len(bodies) == 50 and len({b["request_id"] for b in bodies}) == 50
    questions = {i["question"] for i in items}
    assert sum(b["question"] in questions for b in bodies) >= 30  # the very questions, wrong SQL
    assert any(inj in b["question"] for b in bodies for inj in poison.INJECTIONS)
    assert sum(b["sql"] in poison.REFUSED_SQL for b in bodies) >= 10
    gold = {i["question"]: i["sql"] for i in items}
    assert all(b["sql"] != gold.get(b["question"]) for b in bodies)  # never the right answer


def test_reliability_buckets_confidence_against_accuracy():
    details = [
        {"confidence": 0.95, "correct": True},
        {"confidence": 0.9, "correct": False},
        {"confidence": 1.0, "correct": True},
        {"confidence": 0.1, "correct": False},
        {"confidence": None, "correct": True},  # a 422: no confidence, not scored
    ]
    rel = calibration.reliability(details, buckets=5)
    assert rel["scored"] == 4
    top, bottom = rel["rows"][-1], rel["rows"][0]
    assert top["n"] == 3 and top["accuracy"] == round(2 / 3, 3) and top["mean_confidence"] == 0.95
    assert bottom["n"] == 1 and bottom["accuracy"] == 0.0
    assert rel["ece"] == round(3 / 4 * abs(0.95 - 2 / 3) + 1 / 4 * 0.1, 4)
    assert calibration.reliability([{"confidence": None, "correct": True}])["ece"] is None
    assert "no confidence reported" in calibration.table({"label": "x", "reliability": {"scored": 0}})
