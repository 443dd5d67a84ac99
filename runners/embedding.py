"""The Embedding runner: one stored sentence encoder behind a batchable BentoML API.

Serve alone with `bentoml serve runners.embedding:Embedding`; the model tag is ASKDB_EMBED_MODEL.
"""

from __future__ import annotations

import bentoml

from runners import config
from runners.embedding_engine import Embedder
from runners.schemas import ModelInfo


@bentoml.service(
    name="askdb-embedding",
    resources=config.EMBED_RESOURCES,  # none by default: shares cuda:0 (runners/config.py)
    workers=config.WORKERS,
    traffic={"timeout": config.EMBED_TIMEOUT_S},
    runner_connection=config.RUNNER_CONNECTION,
    labels={"component": "embedding-runner", "owner": "askdb"},
)
class Embedding:
    model = bentoml.models.BentoModel(config.EMBED_MODEL)

    def __init__(self) -> None:
        self.engine = Embedder.load(self.model.path)

    @bentoml.api(**config.batching(config.EMBED_MAX_BATCH_SIZE, config.EMBED_MAX_LATENCY_MS))
    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.engine.embed(texts)

    @bentoml.api
    def info(self) -> ModelInfo:
        return ModelInfo(
            tag=str(self.model.tag),
            task="feature-extraction",
            architecture=str(self.model.info.metadata.get("architecture", "")),
            device=str(self.engine.device),
            dtype=str(self.engine.model.dtype).removeprefix("torch."),
            context_length=self.engine.max_length,
            max_batch_size=config.EMBED_MAX_BATCH_SIZE,
            dim=self.engine.dim,
        )
