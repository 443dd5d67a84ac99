"""The evaluation data and scorer: no test question leaks into the example bank, every gold query
runs, and the scorer compares result sets the way eval/README.md says."""

from __future__ import annotations

import pytest
import yaml

from eval import calibration, learning, poison, runner, scorer
from eval.__main__ import cli as eval_cli
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


def test_a_held_out_set_is_checked_before_it_is_scored(tmp_path, capsys):
    """`--testset PATH`: a set nobody here has seen is loaded, checked against the bank and its gold
    queries run; a malformed one is refused naming the item and the field."""
    good = tmp_path / "held-out.yaml"
    held = {"id": "h1", "level": "easy", "question": "How many media types are there?"}
    good.write_text(yaml.safe_dump([{**held, "sql": "SELECT COUNT(*) FROM MediaType"}]))
    assert scorer.load_testset(path=good)[0]["id"] == "h1"
    assert eval_cli(["check", "--testset", str(good)]) == 0
    bank_item = scorer.load_bank()[0]
    leaked = tmp_path / "leaked.yaml"  # a bank question, and a gold query that returns nothing
    leaked.write_text(
        yaml.safe_dump(
            [
                {"id": "h1", "level": "easy", "question": bank_item["question"], "sql": "SELECT 1"},
                {**held, "id": "h2", "sql": "SELECT Name FROM Artist WHERE 0"},
            ]
        )
    )
    assert eval_cli(["check", "--testset", str(leaked)]) == 1
    out = capsys.readouterr().out
    assert "overlap: ['h1']" in out and "h2: no rows" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump([held]))
    with pytest.raises(scorer.TestsetError, match="item 0 lacks sql"):
        scorer.load_testset(path=bad)
    assert eval_cli(["check", "--testset", str(bad)]) == 2  # one line on stderr, no traceback
    assert "item 0 lacks sql" in capsys.readouterr().err


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


def _detail(item: dict, correct: bool) -> dict:
    return {
        "id": item["id"], "level": item["level"], "correct": correct, "correct_lenient": correct,
        "status": 200, "error": None, "attempts": 1, "latency_ms": 1.0, "confidence": None,
    }  # fmt: skip


def test_merged_runs_and_a_reused_before_pass():
    items = scorer.load_testset()
    halves = [items[:25], items[25:]]
    reports = [
        runner.summarise("full", {}, [_detail(i, i["level"] == "easy") for i in half], "m") for half in halves
    ]
    merged = runner.merge(reports[::-1])
    assert [d["id"] for d in merged["questions"]] == [i["id"] for i in items]  # back in test-set order
    assert merged["correct"] == sum(i["level"] == "easy" for i in items) and merged["n"] == 50
    for bad in ([reports[0], reports[0]], [reports[0], {**reports[1], "options": {"examples": 0}}]):
        with pytest.raises(ValueError):
            runner.merge(bad)  # overlapping questions, or another configuration
    _, test = learning.split(items, seed=0)
    before = learning._subset(merged, test, {})
    assert before["n"] == len(test) and before["correct"] == sum(i["level"] == "easy" for i in test)
    with pytest.raises(ValueError, match="options"):
        learning._subset(merged, test, {"examples": 0})  # not the same pipeline
    with pytest.raises(ValueError, match="lacks"):
        learning._subset(reports[0], test, {})


def test_what_a_prompt_showed_is_read_from_the_prompt():
    calls = [{"user_turns": ["How many albums are there?", "How many artists are there?"]}]
    assert learning.shown({"generations": calls, "examples": []}) == ["How many albums are there?"]
    assert learning.shown({"examples": ["x"]}) == ["x"]  # through the service: the reply's list


def test_confidence_definitions_are_compared_on_the_kept_tokens():
    sure = [["```", -0.01], ["SELECT", -0.01], [" COUNT(*) FROM Album", -0.02], ["```", -0.01]]
    guess = [["SELECT", -0.01], [" Name FROM", -0.01], [" Tracks", -2.3], [" LIMIT 5", -0.01]]
    details = [
        {"id": "a", "level": "easy", "status": 200, "correct": True, "generations": [{"tokens": sure}]},
        {"id": "b", "level": "easy", "status": 200, "correct": False, "generations": [{"tokens": guess}]},
        {"id": "c", "level": "easy", "status": 422, "correct": False, "generations": [{"tokens": sure}]},
    ]
    rows = {r["definition"]: r for r in calibration.compare(details)}
    assert calibration._sql_logprobs({"tokens": sure}) == [-0.01, -0.02]  # the fences are not SQL
    low = rows["min, SQL tokens (pipeline/confidence.py)"]
    assert low["scored"] == 2  # the 422 has no confidence
    assert low["rows"][-1]["n"] == 1 and low["rows"][-1]["accuracy"] == 1.0  # the sure one on top
    assert low["rows"][0]["n"] == 1  # exp(-2.3) = 0.10: the guessed table name
    assert low["top_to_overall"] == 3.0  # 1.0 at the top against 1 of 3 overall
    assert rows["mean, all tokens (until 2026-12-08)"]["rows"][-1]["n"] == 1


def test_variants_rephrase_test_questions_and_are_not_copies():
    """eval/testset/chinook-variants.yaml (`learn --paired`): every variant names a real test question,
    is in neither the bank nor the test set, and its answer differs from its original's, so copying
    the approved original verbatim is never scored right."""
    db = databases.get("chinook")
    originals = {i["id"]: i for i in scorer.load_testset()}
    variants = scorer.load_testset(path=scorer.TESTSET_DIR / "chinook-variants.yaml")
    assert len(variants) >= 24
    assert not scorer.overlap(scorer.load_bank(), variants)
    assert not scorer.overlap(list(originals.values()), variants)
    assert not scorer.broken_gold(db, variants)
    for v in variants:
        original = originals[v["of"]]
        gold, theirs = scorer.run_gold(db, v["sql"])[1], scorer.run_gold(db, original["sql"])[1]
        assert not scorer.same_result(theirs, gold, ordered=bool(v.get("ordered"))), v["id"]
