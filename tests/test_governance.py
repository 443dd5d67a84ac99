"""Issue 17 through a real `bentoml serve` with API keys: per-key data policies on /ask and /schema
(SQLite and PostgreSQL), the explanation, the audit trail of every /ask, verified examples (feedback
only proposes, 50 malicious proposals change nothing, an approval elsewhere reaches the running
worker at once), and a bad policy stopping the service at start-up."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from eval import scorer
from eval.poison import REFUSED_SQL, malicious
from samples.chinook import default_path
from tests.pg import PostgresServer
from tests.servers import ROOT, BentoServer

KEYS = {
    "emea": "emea-5b1e0c7a2d9f4e83",
    "plain": "plain-8c2f6a1d0e3b7c94",
    "admin": "admin-1f7d3b9e5a2c8d06",
    "elsewhere": "elsewhere-6e0a4c8b2f1d",
}
COUNTRIES = ("Germany", "France")
# Track.Bytes, not a Customer column, is hidden here: the 135M model writes different SQL when its
# prompt loses a column, and these tests compare the keys' answers to one same query (hiding
# Customer.Fax is proven by tests/test_policy.py on the SQL itself).
SQLITE_RULES = {
    "Customer": {"rows": "Country IN ('Germany', 'France')", "mask": ["Email", "Phone"]},
    "Invoice": {"rows": "BillingCountry IN ('Germany', 'France')"},
    "Track": {"hide": ["Bytes"]},
}
PG_RULES = {"Customer": {"rows": "\"Country\" IN ('Germany', 'France')", "mask": ["Email", "Phone"]}}
OPTIONS = {"answer": False, "max_attempts": 2}
POLICED = "IN ('Germany', 'France')"  # the row filter, as it shows in the SQL that ran


@dataclass
class Governed:
    server: BentoServer
    env: dict[str, str]
    audit: Path
    asks: list[str] = field(default_factory=list)  # request ids of every /ask made

    def post(self, path: str, key: str, body: dict, timeout: float = 600) -> httpx.Response:
        headers = {"Authorization": f"Bearer {KEYS[key]}"}
        return httpx.post(f"{self.server.url}{path}", json=body, headers=headers, timeout=timeout)

    def ask(self, key: str, question: str, db: str = "chinook") -> dict:
        resp = self.post("/ask", key, {"question": question, "db": db, "options": OPTIONS})
        assert resp.status_code == 200, resp.text
        out = resp.json()
        self.asks.append(out["request_id"])
        return out


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Governed]:
    tmp = tmp_path_factory.mktemp("governed")
    keys = [
        {"name": "emea", "key": KEYS["emea"], "policies": {"chinook": SQLITE_RULES, "pg": PG_RULES}},
        {"name": "plain", "key": KEYS["plain"]},
        {"name": "admin", "key": KEYS["admin"], "admin": True},
        {"name": "elsewhere", "key": KEYS["elsewhere"], "databases": ["pg"]},
    ]
    env = {
        "BENTOML_DO_NOT_TRACK": "true",
        "ASKDB_API_KEYS": json.dumps(keys),
        "ASKDB_DATABASES": json.dumps({"pg": postgres.reader_url}),
        "ASKDB_AUDIT_LOG": str(tmp / "audit" / "audit.jsonl"),
        "ASKDB_EXAMPLE_STORE": str(tmp / "examples"),
        "ASKDB_QUALITY_LOG_DIR": str(tmp / "quality"),
    }
    with BentoServer("service:AskDB", env=env) as server:
        yield Governed(server, env, tmp / "audit" / "audit.jsonl")


def secrets() -> set[str]:
    """Values the emea key must never receive: every customer's email and phone, and the names of
    customers outside Germany and France (less names allowed rows or employees share)."""
    conn = sqlite3.connect(f"file:{default_path()}?mode=ro", uri=True)
    hidden = {v for row in conn.execute("SELECT Email, Phone FROM Customer") for v in row if v}
    outside = "SELECT FirstName, LastName FROM Customer WHERE Country NOT IN ('Germany', 'France')"
    inside = "SELECT FirstName, LastName FROM Customer WHERE Country IN ('Germany', 'France') "
    inside += "UNION ALL SELECT FirstName, LastName FROM Employee"
    allowed = {v for row in conn.execute(inside) for v in row}
    conn.close()
    return hidden | ({v for row in sqlite3.connect(default_path()).execute(outside) for v in row} - allowed)


def leaked(out: dict) -> list[str]:
    cells = [str(v) for row in out["rows"] for v in row]
    return [s for s in secrets() if any(s in c for c in cells)]


def test_the_policy_follows_the_key_through_ask(governed: Governed) -> None:
    canada, berlin = "Which customers live in Canada?", "List all customers from the city of Berlin."
    calls = [("plain", canada), ("emea", canada), ("emea", berlin)]
    with ThreadPoolExecutor(len(calls)) as pool:  # at once: each request keeps its own key
        plain, emea, emea_berlin = pool.map(lambda c: governed.ask(*c), calls)
    assert plain["row_count"] == 8, plain  # the model wrote the bank's query: 8 Canadians
    assert POLICED not in plain["sql"]
    assert emea["rows"] == [] and POLICED in emea["sql"], emea  # the same query, under the policy
    assert emea["explanation"].split(".")[0] == plain["explanation"].split(".")[0]
    assert sorted(emea_berlin["rows"]) == [["Hannah", "Schneider"], ["Niklas", "Schröder"]], emea_berlin
    for out in (emea, emea_berlin):
        assert not leaked(out)
        assert "read through the data policy of key 'emea'" in out["explanation"], out["explanation"]
    assert plain["explanation"].startswith("Lists") and "'Canada'" in plain["explanation"]
    assert "data policy" not in plain["explanation"]
    # the runner's token log-probabilities give every local answer a confidence (pipeline/confidence.py)
    assert all(0.0 < out["confidence"] <= 1.0 for out in (plain, emea, emea_berlin))


def test_the_policy_applies_on_postgresql_too(governed: Governed) -> None:
    canada = "Which customers live in Canada?"
    plain, emea = (governed.ask(k, canada, "pg") for k in ("plain", "emea"))
    assert plain["row_count"] == 8, plain
    assert emea["rows"] == [] and f'"Country" {POLICED}' in emea["sql"], emea


def test_schema_shows_each_key_its_own_view(governed: Governed) -> None:
    def columns(key: str, table: str) -> dict:
        body = governed.post("/schema", key, {"db": "chinook"}).json()
        return {c["name"]: c for t in body["tables"] if t["name"] == table for c in t["columns"]}

    assert "Bytes" in columns("plain", "Track") and "Bytes" not in columns("emea", "Track")
    emea, plain = columns("emea", "Customer"), columns("plain", "Customer")
    assert emea["Email"].get("masked") is True and "masked" not in plain["Email"]
    assert emea["Country"] == plain["Country"]


def test_feedback_validates_its_sql_and_only_proposes(governed: Governed) -> None:
    rid = "ab" * 16
    proposal = {"request_id": rid, "score": 0, "question": "q"}
    bad = governed.post("/feedback", "plain", {**proposal, "sql": "DELETE FROM Artist"})
    assert bad.status_code == 400 and "sql" in bad.text and "DELETE" in bad.text, bad.text
    unparsable = governed.post("/feedback", "plain", {**proposal, "sql": "SELEC x FRM"})
    assert unparsable.status_code == 400 and "sql" in unparsable.text
    lonely = governed.post("/feedback", "plain", {"request_id": rid, "score": 0, "sql": "SELECT 1"})
    assert lonely.status_code == 400 and "question" in lonely.text
    elsewhere = {"request_id": rid, "score": 1, "question": "q", "sql": "SELECT 1", "db": "chinook"}
    assert governed.post("/feedback", "elsewhere", elsewhere).status_code == 403
    plain_score = governed.post("/feedback", "plain", {"request_id": rid, "score": 1})
    assert plain_score.status_code == 200 and plain_score.json()["proposal_id"] is None


def test_fifty_malicious_proposals_change_no_answer(governed: Governed) -> None:
    # questions this model answers (the bank has their shape), so every prompt's examples can be seen
    probes = [i for i in scorer.load_testset() if i["id"] in ("t01", "t06", "t10")]
    before = [governed.ask("plain", p["question"]) for p in probes]  # one at a time: same batches
    items = malicious(probes, 50)
    statuses = [governed.post("/feedback", "plain", body).status_code for body in items]
    assert statuses.count(200) >= 30 and set(statuses) <= {200, 400}, statuses
    refusable = [s for s, b in zip(statuses, items, strict=True) if b["sql"] in REFUSED_SQL]
    assert refusable and set(refusable) == {400}  # what the guard refuses is not even stored
    after = [governed.ask("plain", p["question"]) for p in probes]
    proposed = {b["question"] for b in items}
    assert {p["question"] for p in probes} <= proposed  # the very questions were proposed, wrongly
    for b, a in zip(before, after, strict=True):
        assert (a["sql"], a["rows"], a["examples"]) == (b["sql"], b["rows"], b["examples"]), a["question"]
        assert not proposed & set(a["examples"]), a["examples"]  # the retrieval never returned them
    pending = governed.post("/examples", "admin", {"action": "list"}).json()["pending"]
    assert len(pending) == statuses.count(200)


def _review(governed: Governed, *args: str) -> subprocess.CompletedProcess:
    """`askdb examples review ...` in a process of its own, with the service's environment."""
    env = {**os.environ, **governed.env}
    cmd = [sys.executable, str(ROOT / "askdb_cli.py"), "examples", "review", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_an_approved_example_reaches_the_running_service_at_once(governed: Governed) -> None:
    question = "Show the email addresses of the customers in Berlin."
    sql = "SELECT Email FROM Customer WHERE City = 'Berlin'"
    body = {"request_id": "cd" * 16, "score": 1, "question": question, "sql": sql}
    proposal = governed.post("/feedback", "plain", body).json()["proposal_id"]
    assert proposal
    assert question not in governed.ask("plain", question)["examples"]  # proposed, not approved
    for key in ("plain", "emea"):  # review is for admin keys only
        assert governed.post("/examples", key, {"action": "list"}).status_code == 403
    listed = _review(governed, "list")
    assert listed.returncode == 0 and proposal in listed.stdout
    approved = _review(governed, "approve", proposal)  # another process: the worker must notice
    assert approved.returncode == 0, approved.stderr
    plain, emea = governed.ask("plain", question), governed.ask("emea", question)
    assert question in plain["examples"] and question in emea["examples"]
    assert sorted(plain["rows"]) == [["hannah.schneider@yahoo.de"], ["nschroder@surfeu.de"]], plain
    assert emea["rows"] == [["***"], ["***"]] and not leaked(emea), emea
    again = governed.post("/examples", "admin", {"action": "approve", "id": proposal})
    assert again.status_code == 409 and "already approved" in again.text
    missing = governed.post("/examples", "admin", {"action": "reject", "id": "nope"})
    assert missing.status_code == 404
    pending = governed.post("/examples", "admin", {"action": "list"}).json()["pending"]
    rejected = governed.post("/examples", "admin", {"action": "reject", "id": pending[0]["id"]})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"


def test_every_ask_is_in_the_verified_audit_trail(governed: Governed) -> None:
    records = [json.loads(line) for line in governed.audit.read_text().splitlines()]
    asks = [r for r in records if r["kind"] == "ask"]
    assert sorted(r["request_id"] for r in asks) == sorted(governed.asks)  # one per /ask
    assert {r["key"] for r in asks} == {"plain", "emea"}
    for r in asks:
        assert r["outcome"] == "ok" and isinstance(r["row_count"], int) and r["latency_ms"] > 0
        if r["key"] == "emea":  # the SQL as executed, after the policy rewrite
            assert POLICED in r["sql"], r
    decisions = [r for r in records if r["kind"] == "example"]
    assert [r["decision"] for r in decisions] == ["approved", "rejected"]
    assert decisions[0]["key"].startswith("cli:") and decisions[1]["key"] == "admin"
    out = subprocess.run(
        [sys.executable, str(ROOT / "askdb_cli.py"), "audit", "verify", str(governed.audit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"record {len(records)}" in out.stdout


def test_a_bad_row_filter_stops_the_service_naming_key_and_table() -> None:
    rules = {"chinook": {"Invoice": {"rows": "Total > 1; DROP TABLE Invoice"}}}
    keys = [{"name": "broken", "key": "broken-0123456789ab", "policies": rules}]
    env = {"ASKDB_API_KEYS": json.dumps(keys), "BENTOML_DO_NOT_TRACK": "true"}
    server = BentoServer("service:AskDB", env=env)
    with pytest.raises(RuntimeError) as err:
        server.start(timeout=300)
    assert server.proc is not None and server.proc.returncode not in (None, 0)  # it exited on its own
    assert "key 'broken', database 'chinook', table 'Invoice'" in str(err.value)
    assert "broken-0123456789ab" not in server.log_path.read_text()
