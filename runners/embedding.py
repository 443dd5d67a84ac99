"""The Embedding runner: one stored sentence encoder; concurrent calls are encoded in batches.

Serve alone with `bentoml serve runners.embedding:Embedding`; the model tag is ASKDB_EMBED_MODEL.
Calls queue in runners/batch_queue.py (up to ASKDB_EMBED_MAX_BATCH_SIZE texts a batch, 1: one call
at a time). A call whose client disconnects while it waits leaves the queue and is never encoded
(CancelOnDisconnect cancels its handler). A batch already running on the device cannot be stopped:
it runs to its end and the results of callers that left are dropped.
"""

from __future__ import annotations

import bentoml

from runners import config
from runners.batch_queue import BatchQueue
from runners.disconnect import CancelOnDisconnect
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
        self.batches: BatchQueue[str, list[float]] = BatchQueue(
            self.engine.embed, config.EMBED_MAX_BATCH_SIZE, config.EMBED_MAX_LATENCY_MS / 1000
        )

    @bentoml.api
    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self.batches.submit(texts)

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


# A caller that leaves (an /ask or /embed cancelled upstream) takes its queued texts out of the batch.
Embedding.add_asgi_middleware(CancelOnDisconnect)
