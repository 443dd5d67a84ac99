"""Hypothesis property tests: the SQL guard (on the real Chinook SQLite file), the request models'
bounds, and the access-control building blocks (key ring, rate limiter, usage meter, error shapes)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import shutil
from pathlib import Path

import pytest
import sqlglot
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlglot import exp

from api import limits
from api.auth import ApiKey, KeyRing, digest
from api.bentoml_errors import fix_error_body
from api.openai_protocol import MAX_MESSAGES, ChatCompletionRequest
from api.protocol import MAX_QUESTION_CHARS, MAX_ROWS
from api.ratelimit import RateLimiter
from api.usage import UsageMeter
from pipeline import databases, guard
from pipeline.execute import QueryTimeout, SQLError, execute
from runners.schemas import GenRequest
from samples.chinook import default_path
from service import AskDB
from tests.hostile_sql import CHINOOK_TABLES

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# ---- SQL guard -------------------------------------------------------------------------------------

TABLES = ["Artist", "Album", "Track", "Invoice", "Customer", "sqlite_master", "pg_catalog.pg_user", "x"]
COLUMNS = ["*", "Name", "Title", "AlbumId", "Total", "1", "COUNT(*)", "load_extension('x')", "random()"]
WRITES = [
    "INSERT INTO Artist (Name) VALUES ('x')",
    "UPDATE Artist SET Name = 'x'",
    "DELETE FROM Artist",
    "DROP TABLE Artist",
    "CREATE TABLE t (a int)",
    "ALTER TABLE Artist ADD COLUMN c int",
    "ATTACH DATABASE 'x.db' AS x",
    "PRAGMA writable_schema = 1",
    "VACUUM",
    "REPLACE INTO Artist (ArtistId, Name) VALUES (1, 'x')",
    "BEGIN",
    "COMMIT",
]


@st.composite
def selects(draw: st.DrawFn) -> str:
    cols = ", ".join(draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=3)))
    sql = f"SELECT {cols} FROM {draw(st.sampled_from(TABLES))}"
    if draw(st.booleans()):
        sql += f" WHERE {draw(st.sampled_from(['1=1', 'Name LIKE ?', 'AlbumId > 3', 'Total IS NULL']))}"
    if draw(st.booleans()):
        sql += f" LIMIT {draw(st.integers(min_value=-5, max_value=10**6))}"
    if draw(st.booleans()):
        sql = (
            f"SELECT * FROM ({sql}) AS sub"
            if draw(st.booleans())
            else f"{sql} UNION SELECT {cols} FROM Album"
        )
    return sql


@st.composite
def hostile_sql(draw: st.DrawFn) -> str:
    """Queries, writes, stacked statements, comments and noise mixed together."""
    parts = draw(st.lists(st.one_of(selects(), st.sampled_from(WRITES)), min_size=1, max_size=3))
    sep = draw(st.sampled_from(["; ", ";\n", " -- ;\n", " /* ; */ ; "]))
    sql = sep.join(parts)
    if draw(st.booleans()):
        sql = draw(st.sampled_from(["/* hi */ ", "-- c\n", "WITH q AS (SELECT 1) ", "("])) + sql
    return sql + draw(st.sampled_from(["", ";", " ;", "--", ")", draw(st.text(max_size=8))]))


def _limit_of(sql: str) -> int:
    tree = sqlglot.parse_one(sql, read="sqlite")
    return int(tree.args["limit"].expression.this)


@SETTINGS
@given(sql=st.one_of(hostile_sql(), st.text(max_size=200)), max_rows=st.integers(1, 1000))
def test_guard_output_is_one_bounded_read_only_query(sql: str, max_rows: int) -> None:
    try:
        safe = guard.guard(sql, "sqlite", max_rows, CHINOOK_TABLES)
    except (guard.Refused, guard.ParseError):
        return  # refusing is always allowed; anything else raised fails the test
    statements = sqlglot.parse(safe, read="sqlite")
    assert len(statements) == 1
    root = statements[0]
    assert isinstance(root, exp.Select | exp.SetOperation)
    assert not any(isinstance(n, guard.FORBIDDEN_NODES) for n in root.walk())
    assert 0 <= _limit_of(safe) <= max_rows + 1
    assert (
        guard.guard(safe, "sqlite", max_rows, CHINOOK_TABLES) == safe
    )  # the guard is idempotent on its output


@SETTINGS
@given(
    write=st.sampled_from(WRITES),
    before=st.lists(selects(), max_size=1),
    after=st.lists(selects(), max_size=1),
)
def test_guard_refuses_any_write_and_any_second_statement(write: str, before: list, after: list) -> None:
    sql = "; ".join([*before, write, *after])
    with pytest.raises((guard.Refused, guard.ParseError)):
        guard.guard(sql, "sqlite", 10, CHINOOK_TABLES)


@pytest.fixture(scope="module")
def chinook_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[databases.Database, Path]:
    path = tmp_path_factory.mktemp("chinook") / "chinook.sqlite"
    shutil.copy(default_path(), path)
    return databases.open_database("prop", f"sqlite:///{path}"), path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sql=hostile_sql(), max_rows=st.integers(1, 50))
def test_guarded_sql_never_changes_the_database(chinook_copy: tuple, sql: str, max_rows: int) -> None:
    db, path = chinook_copy
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        safe = guard.guard(sql, "sqlite", max_rows, CHINOOK_TABLES)
    except (guard.Refused, guard.ParseError):
        return
    try:
        result = execute(db, safe, max_rows, timeout_s=5)
    except (SQLError, QueryTimeout):
        result = None  # the database refused it (unknown table, ...): fine, as long as nothing changed
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    if result is not None:
        assert result.row_count <= max_rows


# ---- request models ----------------------------------------------------------------------------------

GENERATE = AskDB.apis["generate"].input_spec
ASK = AskDB.apis["ask"].input_spec


def _fields_named(err: ValidationError) -> set[str]:
    return {str(e["loc"][0]) for e in err.errors()}


@SETTINGS
@given(n=st.integers(-(10**6), 10**6), length=st.integers(0, limits.MAX_PROMPT_CHARS + 50))
def test_generate_bounds(n: int, length: int) -> None:
    ok_n = 1 <= n <= limits.MAX_NEW_TOKENS
    ok_len = 1 <= length <= limits.MAX_PROMPT_CHARS
    try:
        GENERATE.model_validate({"prompt": "p" * length, "max_new_tokens": n})
    except ValidationError as err:
        assert _fields_named(err) == {f for f, ok in (("prompt", ok_len), ("max_new_tokens", ok_n)) if not ok}
    else:
        assert ok_n and ok_len
    assume(ok_len)
    # Omitting the field gives a default within the cap.
    assert GENERATE.model_validate({"prompt": "p" * length}).max_new_tokens <= limits.MAX_NEW_TOKENS


@SETTINGS
@given(length=st.integers(0, 1100), rows=st.integers(-5, 2000), db=st.text(max_size=70))
def test_ask_bounds_name_the_field(length: int, rows: int, db: str) -> None:
    body = {"question": "q" * length, "max_rows": rows, "db": db}
    bad = set()
    if not 1 <= length <= MAX_QUESTION_CHARS:
        bad.add("question")
    if not 1 <= rows <= MAX_ROWS:
        bad.add("max_rows")
    if not 1 <= len(db) <= 64:
        bad.add("db")
    try:
        ASK.model_validate(body)
    except ValidationError as err:
        assert _fields_named(err) == bad
    else:
        assert not bad


@SETTINGS
@given(n=st.integers(0, MAX_MESSAGES + 20), max_tokens=st.one_of(st.none(), st.integers(-3, 5000)))
def test_chat_bounds_name_the_field(n: int, max_tokens: int | None) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}] * n, "max_tokens": max_tokens}
    bad = set()
    if not 1 <= n <= MAX_MESSAGES:
        bad.add("messages")
    if max_tokens is not None and not 1 <= max_tokens <= limits.MAX_NEW_TOKENS:
        bad.add("max_tokens")
    try:
        req = ChatCompletionRequest.model_validate(body)
    except ValidationError as err:
        assert _fields_named(err) == bad
    else:
        assert not bad
        assert 1 <= req.budget() <= limits.MAX_NEW_TOKENS


@SETTINGS
@given(st.floats(0.0, 2.0))
def test_any_temperature_in_range_is_usable(temperature: float) -> None:
    """Tiny temperatures overflowed logits / temperature to inf (a 500 found by the fuzz run)."""
    req = GenRequest(prompt="x", temperature=temperature)
    assert req.temperature == 0.0 or torch.isfinite(
        torch.tensor([30.0], dtype=torch.float32) / req.temperature
    )


# ---- access control ------------------------------------------------------------------------------------

key_text = st.text(st.characters(codec="utf-8"), min_size=16, max_size=40)


@SETTINGS
@given(keys=st.lists(key_text, min_size=1, max_size=5, unique=True), probe=st.one_of(key_text, st.none()))
def test_key_ring_matches_exactly_one_configured_key(keys: list[str], probe: str | None) -> None:
    ring = KeyRing([ApiKey(f"k{i}", digest(k), None, None, None) for i, k in enumerate(keys)])
    for i, k in enumerate(keys):
        assert ring.authenticate(k).name == f"k{i}"
    found = ring.authenticate(probe)
    assert (found is not None) == (probe in keys)
    assert probe is None or ring.authenticate(probe + "x") is None or probe + "x" in keys


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@SETTINGS
@given(rpm=st.integers(1, 30), gaps=st.lists(st.floats(0, 20, allow_nan=False), min_size=1, max_size=120))
def test_requests_per_minute_never_exceeded(rpm: int, gaps: list[float]) -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    admitted: list[float] = []
    for gap in gaps:
        clock.now += gap
        decision = limiter.admit("k", rpm, None)
        if decision.allowed:
            admitted.append(clock.now)
        else:
            assert decision.limit == "requests_per_minute" and decision.retry_after_s >= 1
    # In any window of T seconds: at most one minute's burst plus what refills in T.
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            span = admitted[j] - start
            assert j - i + 1 <= rpm + rpm * span / 60 + 1e-6


@SETTINGS
@given(rpm=st.integers(1, 30), tpm=st.integers(1, 500), costs=st.lists(st.integers(0, 200), max_size=60))
def test_retry_after_is_enough(rpm: int, tpm: int, costs: list[int]) -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    for cost in costs:
        decision = limiter.admit("k", rpm, tpm)
        if decision.allowed:
            limiter.charge_tokens("k", cost)
            continue
        clock.now += decision.retry_after_s  # waiting as told is always enough
        assert limiter.admit("k", rpm, tpm).allowed
        limiter.charge_tokens("k", cost)


@SETTINGS
@given(usages=st.lists(st.integers(0, 10**6), max_size=5), cuts=st.lists(st.integers(0, 10**4), max_size=8))
def test_usage_meter_counts_stream_tokens_however_chunked(usages: list[int], cuts: list[int]) -> None:
    lines = [b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n']
    lines += [json.dumps({"usage": {"total_tokens": u}}).encode().join([b"data: ", b"\n\n"]) for u in usages]
    stream = b"".join([*lines, b"data: [DONE]\n\n"])
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> int:
        meter = UsageMeter(send)
        await meter.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
            }
        )
        for i, chunk in enumerate(chunks):
            await meter.send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})
        return meter.tokens

    assert asyncio.run(run()) == sum(usages)
    assert b"".join(m.get("body", b"") for m in sent) == stream  # passed on unchanged


@SETTINGS
@given(
    payload=st.recursive(
        st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
def test_error_shape_fix_only_unwraps_the_tuple_bug(payload: object) -> None:
    fixed = fix_error_body(payload)
    assert fix_error_body(fixed) == fixed
    if fixed != payload:
        assert payload == [fixed] and isinstance(fixed, dict) and "error" in fixed
