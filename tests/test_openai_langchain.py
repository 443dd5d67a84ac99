"""A LangChain program written for OpenAI runs unchanged against askdb (langchain-openai)."""

from __future__ import annotations

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from tests.servers import BentoServer


def test_chat_openai_chain_invoke_and_stream(askdb: BentoServer) -> None:
    llm = ChatOpenAI(
        base_url=f"{askdb.url}/v1", api_key="unused", model="local", temperature=0, max_tokens=10
    )
    chain = (
        ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("user", "{q}")])
        | llm
        | StrOutputParser()
    )
    whole = chain.invoke({"q": "Name a color."})
    assert whole.strip()
    pieces = list(chain.stream({"q": "Name a color."}))
    assert len(pieces) > 1 and "".join(pieces) == whole
    message = llm.invoke("Say hi")
    assert message.usage_metadata["output_tokens"] <= 10
    assert message.response_metadata["model_name"].startswith("smollm2-135m-instruct:")


async def test_openai_embeddings(askdb: BentoServer) -> None:
    # check_embedding_ctx_length=False: send text, not tiktoken ids (the setting for any non-OpenAI server)
    emb = OpenAIEmbeddings(
        base_url=f"{askdb.url}/v1", api_key="unused", model="local", check_embedding_ctx_length=False
    )
    docs = await emb.aembed_documents(["albums by AC/DC", "invoices from Germany"])
    query = emb.embed_query("albums by AC/DC")
    assert len(docs) == 2 and len(query) == 384
    assert abs(sum(a * b for a, b in zip(docs[0], query, strict=True)) - 1.0) < 1e-3
