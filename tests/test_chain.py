"""The text-to-SQL chain as plain LangChain: its steps alone, then the whole chain over the real
stored models loaded in this process (the runners' engines, without HTTP) and the real Chinook file."""

from __future__ import annotations

import bentoml
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from eval.inprocess import Engine as InProcess
from models.defaults import DEFAULT_EMBED_TAG, DEFAULT_LLM_TAG
from pipeline import build_chain, databases, examples, prompt, repair, schema, select
from pipeline.execute import QueryResult
from pipeline.generate import extract_sql
from providers.local import RunnerChatModel
from runners import engine as llm_engine
from runners.embedding_engine import Embedder


@pytest.fixture(scope="module")
def chat_model() -> RunnerChatModel:
    engine = llm_engine.load(bentoml.models.get(DEFAULT_LLM_TAG).path)
    return RunnerChatModel(runner=InProcess(engine), model_name=DEFAULT_LLM_TAG)


@pytest.fixture(scope="module")
def embeddings():
    from providers.local import RunnerEmbeddings

    return RunnerEmbeddings(InProcess(Embedder.load(bentoml.models.get(DEFAULT_EMBED_TAG).path)))


@pytest.fixture(scope="module")
def chinook() -> schema.SchemaInfo:
    return schema.describe(databases.get("chinook"))


@pytest.mark.parametrize(
    ("reply", "sql"),
    [
        ("SELECT COUNT(*) FROM Album", "SELECT COUNT(*) FROM Album"),
        ("```sql\nSELECT Name FROM Artist;\n```\nThis lists artists.", "SELECT Name FROM Artist"),
        ("Sure! SELECT Name FROM Genre; DROP TABLE Genre", "SELECT Name FROM Genre"),
        ("SELECT Name FROM Track WHERE Name = 'a;b'", "SELECT Name FROM Track WHERE Name = 'a;b'"),
        ("DROP TABLE Track", "DROP TABLE Track"),  # kept, so the guard refuses it by name
        ("I cannot help with that.", None),
    ],
)
def test_extract_sql(reply: str, sql: str | None):
    assert extract_sql(reply) == sql


def test_select_connects_tables_through_foreign_keys(chinook):
    # Artist and Track are only linked through Album
    assert select.connect(chinook, {"Artist", "Track"}) == {"Artist", "Album", "Track"}
    assert select.connect(chinook, {"Customer", "Genre"}) >= {"Invoice", "InvoiceLine", "Track"}


def test_prompt_names_the_dialect_and_shows_examples_as_turns(chinook):
    shots = [examples.Example("How many albums are there?", "SELECT COUNT(*) FROM Album")]
    msgs = prompt.build("How many artists?", prompt.compact_schema(chinook, ["Artist"]), "sqlite", shots)
    assert isinstance(msgs[0], SystemMessage) and "SQLite" in msgs[0].content
    assert "Artist(ArtistId, Name)" in msgs[0].content and "Track(" not in msgs[0].content
    assert [type(m) for m in msgs[1:]] == [HumanMessage, AIMessage, HumanMessage]
    assert msgs[-1].content == "How many artists?"


def test_vote_picks_the_result_most_candidates_share():
    def outcome(rows: list) -> repair.Outcome:
        return repair.Outcome("", "SELECT", "SELECT", QueryResult(["n"], rows, False))

    a, b, c = outcome([[1]]), outcome([[2]]), outcome([[2]])
    assert repair.vote([a, b, c]) is b
    assert repair.vote([outcome([]), outcome([[3]])]).result.rows == [[3]]  # non-empty beats empty
    failed = repair.Outcome("", None, kind="unanswerable", error="no SQL")
    assert repair.vote([failed, a]) is a


def test_chat_model_reports_token_usage(chat_model):
    reply = chat_model.invoke("Say hi.", max_tokens=5)
    assert isinstance(reply, AIMessage)
    assert reply.usage_metadata["input_tokens"] > 0
    assert 0 < reply.usage_metadata["output_tokens"] <= 5


def test_whole_chain_answers_a_bank_question_from_plain_langchain(chat_model, embeddings):
    chain = build_chain(chat_model, embeddings)
    out = chain.invoke(
        {"question": "How many albums are there?", "db": "chinook", "options": {"answer": False}}
    )
    assert out["rows"] == [[347]]
    assert out["sql"].upper().startswith("SELECT")
    assert out["attempts"] >= 1 and out["usage"]["prompt_tokens"] > 0
    assert out["examples"][-1] == "How many albums are there?"  # the closest example comes last


def test_grounding_drops_invented_filters_only():
    from pipeline.generate import ground_literals

    assert ground_literals("SELECT COUNT(*) FROM Album WHERE ArtistId = 1234567890", "How many albums?") == (
        "SELECT COUNT(*) FROM Album"
    )
    kept = "SELECT Name FROM Customer WHERE Country = 'Brazil'"
    assert ground_literals(kept, "Which customers live in Brazil?") == kept
    derived = "SELECT COUNT(*) FROM Track WHERE Milliseconds > 600000"
    assert ground_literals(derived, "Tracks longer than 10 minutes?") == derived
    broken = "SELECT * FROM Customer WHERE Country = 'Bahia'` to get"  # does not tokenize: left alone
    assert ground_literals(broken, "Which customers?") == broken
