"""LangChain's own standard integration tests (`langchain-tests`), pointed at a live askdb: the chat
suite through `ChatOpenAI`, the embeddings suite through `OpenAIEmbeddings`, both on /v1.

Nothing here is written by askdb except the wiring and the capability flags, and each flag that
switches tests off says which limit of askdb's it states (README, "OpenAI-compatible API").
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests

from tests.servers import BentoServer

SERVER: dict[str, str] = {}  # the live server's URL, set before each test builds its model


@pytest.fixture(autouse=True)
def _live_askdb(askdb: BentoServer) -> None:
    SERVER["v1"] = f"{askdb.url}/v1"


class TestAskdbChatOpenAI(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # greedy, and a budget its longest forced call fits (a grammar ends JSON as soon as it is
        # complete, so tool tests stop early; the whole suite takes about a minute on 2 cores)
        return {
            "base_url": SERVER["v1"],
            "api_key": "unused",
            "model": "local",
            "max_tokens": 160,  # the unicode tool test's free-text description needs it
            "temperature": 0,  # OpenAI's default is 1: a 135M model sampling at 1 writes noise
            "timeout": 300,
            "stream_usage": True,  # ChatOpenAI asks for usage in streams only from api.openai.com
        }

    @property
    def model_override_value(self) -> str:
        return "smollm2-135m-instruct"  # another name of the same model

    # What askdb serves (each flag's test runs):
    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    # The default model's limit, not the API's (tests/test_openai_structured.py proves the API:
    # every schema-constrained output validates): at temperature 0, SmolLM2-135M loops inside the
    # suite's free-text fields ("A cat is a cat, right? A cat is a cat, ...") until max_tokens, so
    # its Joke never completes, and in JSON mode it does not follow a format given in words.
    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    # askdb's limits: text-only models, no Anthropic-format inputs (each documented in the README)
    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_image_urls(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_image_tool_message(self) -> bool:
        return False

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False

    @property
    def supports_anthropic_inputs(self) -> bool:
        return False

    # No flag covers this one: under tool_choice "auto" SmolLM2-135M answers in prose instead of
    # calling the tool (with either prompt tried: askdb's generic one and Hermes' wording); forced
    # calls (required / named) pass above. strict: the day a model calls here, this says so.
    @pytest.mark.xfail(
        reason="SmolLM2-135M does not choose to call a tool under tool_choice auto", strict=True
    )
    def test_agent_loop(self, model: Any) -> None:
        super().test_agent_loop(model)


class TestAskdbOpenAIEmbeddings(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[OpenAIEmbeddings]:
        return OpenAIEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        # text, not tiktoken ids: askdb's tokenizer is the model's own (README)
        return {
            "base_url": SERVER["v1"],
            "api_key": "unused",
            "model": "local",
            "check_embedding_ctx_length": False,
        }
