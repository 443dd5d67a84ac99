"""The CPU image, built on the offline path and run with podman exactly as ENVIRONMENT.md says.

Run with `make test-image` (the build takes minutes, so `make test`, and with it .ci/run, leaves it out).
The image is built once per canary: `localhost/askdb:test-cpu`, from a copy of this tree into which
secret-looking files are planted, with secrets in the build's environment; the last test greps the
exported layers for them. Delete the image (deploy/image/podman.sh rmi) to force a rebuild.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import openai
import pytest

from models.defaults import DEFAULT_EMBED_TAG, DEFAULT_LLM_TAG
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
PODMAN = str(ROOT / "deploy/image/podman.sh")
IMAGE = os.environ.get("ASKDB_TEST_IMAGE", "localhost/askdb:test-cpu")
OCI_ROOT = Path(os.environ.get("ASKDB_OCI_ROOT", "/var/tmp/askdb-oci"))
CANARY_FILE = OCI_ROOT / (IMAGE.rsplit("/", 1)[-1].replace(":", "-") + ".canary")
# Secret names a careless bentofile `envs:` or Dockerfile might bake in; all hold the canary at build time.
SECRET_ENVS = ("OPENAI_API_KEY", "HF_TOKEN", "ASKDB_API_KEYS", "ASKDB_DB_PASSWORD", "REGISTRY_PASSWORD")
# A plain `podman stop` is SIGTERM; an orderly shutdown exits 0, or 143 (128 + SIGTERM) when the
# signal reaches a process that does not catch it. Anything else (137: killed) is a failure.
CLEAN_EXITS = {0, 143}
# Once the last in-flight response is out, the container must be gone within this bound (measured
# 1.7-2.4 s; podman's default stop timeout is 10 s, k8s adds its preStop): nothing may linger idle.
EXIT_AFTER_LAST_RESPONSE_S = 30
RUN_FLAGS = (
    *("--network", "host", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"),
    *("-e", "BENTOML_DO_NOT_TRACK=true"),
)


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return out


def plant_canary(ctx: Path, canary: str) -> None:
    """Files a developer might leave in the tree; the bentofile's include/exclude must keep them out."""
    for rel in (".env", "pipeline/.env", "api/credentials.pem", "secrets/token", "runners/deploy.key"):
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(f"OPENAI_API_KEY={canary}\n")


def copy_tree(ctx: Path) -> None:
    """The working tree as git sees it (tracked + new files, nothing ignored), plus the built data."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, ctx / rel)
    for built in [*ROOT.glob("data/*.sqlite"), *ROOT.glob("build/wheels/*.whl")]:
        (ctx / built.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, ctx / built.relative_to(ROOT))


def build_image(tmp: Path) -> str:
    canary = f"askdb-canary-{secrets.token_hex(16)}"
    ctx = tmp / "ctx"
    copy_tree(ctx)
    plant_canary(ctx, canary)
    env = {**os.environ, "VENV": str(ROOT / ".venv"), **dict.fromkeys(SECRET_ENVS, canary)}
    out = subprocess.run(
        [str(ctx / "deploy/image/build.sh"), "--offline", "--flavour", "cpu", "--image", IMAGE],
        cwd=ctx,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    tag = re.search(r"^bento: (\S+)$", out.stdout, re.M)
    if tag:  # the image holds the Bento now; the store copy is only clutter
        subprocess.run([str(ROOT / ".venv/bin/bentoml"), "delete", "-y", tag.group(1)], capture_output=True)
    CANARY_FILE.write_text(canary)
    return canary


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The secret planted in the build that made IMAGE (building it if missing)."""
    exists = podman("image", "exists", IMAGE, check=False).returncode == 0
    if exists and CANARY_FILE.is_file():
        return CANARY_FILE.read_text().strip()
    return build_image(tmp_path_factory.mktemp("image"))


class Container:
    def __init__(self, name: str, port: int) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"

    def logs(self) -> str:
        out = podman("logs", self.name, check=False)
        return (out.stdout + out.stderr)[-6000:]

    def running(self) -> bool:
        out = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return out.stdout.strip() == "true"


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def container(canary: str) -> Iterator[Container]:
    port = free_port()
    box = Container(f"askdb-test-{port}", port)
    # ENVIRONMENT.md's flags: runc (crun fails on hybrid cgroups), host network, these ulimits.
    podman("run", "-d", "--name", box.name, *RUN_FLAGS, "-e", f"PORT={port}", IMAGE)
    try:
        deadline = time.monotonic() + 600
        while not ready(box.url):
            assert box.running(), f"container exited before it was ready:\n{box.logs()}"
            assert time.monotonic() < deadline, f"container not ready in 600 s:\n{box.logs()}"
            time.sleep(0.5)  # poll interval
        yield box
    finally:
        podman("rm", "-f", "-t", "5", box.name, check=False)


@pytest.fixture(scope="module")
def paths(container: Container) -> set[str]:
    """The routes this image serves, from its own OpenAPI document."""
    return set(httpx.get(f"{container.url}/docs.json", timeout=30).json()["paths"])


def test_image_runs_as_non_root(container: Container) -> None:
    user = podman("image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip()
    assert user == "bentoml"
    # 1034: BentoML's `bentoml` user, which deploy/k8s pins as runAsUser
    assert podman("exec", container.name, "id", "-u").stdout.strip() == "1034"
    # the server process itself (PID 1 after the entrypoint's exec), not just a fresh exec
    status = podman("exec", container.name, "cat", "/proc/1/status").stdout
    assert re.search(r"^Uid:\s+(\d+)", status, re.M).group(1) == "1034"


def test_generate_answers_like_the_packed_model(container: Container) -> None:
    from runners import engine as llm_engine
    from runners.schemas import GenRequest

    prompt = "The capital of France is"
    with bentoml.SyncHTTPClient(container.url, timeout=300) as client:
        out = client.generate(prompt=prompt, max_new_tokens=12)
    assert out["model"] == str(bentoml.models.get(DEFAULT_LLM_TAG).tag)
    assert out["finish_reason"] in {"stop", "length"}
    assert out["usage"]["completion_tokens"] > 0
    # greedy decoding of the same weights on the same torch build: the same words as in-process
    local = llm_engine.load(bentoml.models.get(DEFAULT_LLM_TAG).path)
    [expected] = local.run([GenRequest(prompt=prompt, max_new_tokens=12)])
    assert out["text"] == expected.text and out["text"].strip()


def test_embed_matches_the_packed_model(container: Container) -> None:
    from runners.embedding_engine import Embedder

    texts = ["How many albums does AC/DC have?", "a completely different sentence"]
    with bentoml.SyncHTTPClient(container.url, timeout=120) as client:
        out = client.embed(texts=texts)
    assert out["dim"] == 384 and len(out["embeddings"]) == 2
    assert out["model"] == str(bentoml.models.get(DEFAULT_EMBED_TAG).tag)
    local = Embedder.load(bentoml.models.get(DEFAULT_EMBED_TAG).path).embed(texts)
    for got, want in zip(out["embeddings"], local, strict=True):
        assert sum(a * b for a, b in zip(got, want, strict=True)) > 0.9999


def test_ask_reads_the_packed_chinook(container: Container, paths: set[str]) -> None:
    if "/ask" not in paths:
        pytest.skip("this build of the service has no /ask yet")
    # a question of eval/bank (the pipeline's few-shot examples, shipped in the Bento): tests/test_ask.py
    # holds the in-process server to the same answer
    question = {"question": "How many albums are there?", "max_rows": 10}
    resp = httpx.post(f"{container.url}/ask", json=question, timeout=300)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # the rows came from the database inside the image: the same SQL on the local copy agrees
    with sqlite3.connect(f"file:{ROOT / 'data/chinook.sqlite'}?mode=ro", uri=True) as db:
        expected = [list(row) for row in db.execute(body["sql"]).fetchall()]
    assert body["rows"] == expected[: len(body["rows"])] and body["row_count"] == len(body["rows"])
    assert expected == [[347]], f"wrong answer from {body['sql']!r}"


def test_openai_chat_completions(container: Container, paths: set[str]) -> None:
    if "/v1/chat/completions" not in paths:
        pytest.skip("this build of the service has no /v1 yet")
    client = openai.OpenAI(base_url=f"{container.url}/v1", api_key=os.environ.get("ASKDB_API_KEY", "none"))
    out = client.chat.completions.create(
        model=str(bentoml.models.get(DEFAULT_LLM_TAG).tag),
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
    )
    assert out.choices[0].message.content and out.usage.completion_tokens > 0


def test_no_secret_in_any_layer(canary: str, tmp_path: Path) -> None:
    """Export the image and search every byte of every layer (and its config) for the canary."""
    archive = OCI_ROOT / "tmp" / f"export-{os.getpid()}.tar"
    try:
        podman("save", "--format", "docker-archive", "-o", str(archive), IMAGE, timeout=600)
        needle, marker = canary.encode(), b"the one service users talk to"  # from service.py
        seen_marker = False
        with tarfile.open(archive) as outer:
            for member in outer:
                if not member.isfile():
                    continue
                data = outer.extractfile(member)
                tail = b""
                while chunk := data.read(16 << 20):
                    window = tail + chunk
                    assert needle not in window, f"canary found in {member.name}"
                    seen_marker = seen_marker or marker in window
                    tail = window[-len(marker) :]
        assert seen_marker, "layers unreadable (compressed?): the search proved nothing"
    finally:
        archive.unlink(missing_ok=True)
    history = podman("history", "--no-trunc", IMAGE).stdout + podman("image", "inspect", IMAGE).stdout
    assert canary not in history


def test_sigterm_finishes_in_flight_requests_then_exits_cleanly(container: Container) -> None:
    """Last: stops the container. Requests accepted before SIGTERM all complete with full answers."""
    results: list[httpx.Response | BaseException] = []
    answered: list[float] = []  # monotonic time of each response

    def call(i: int) -> None:
        try:
            body = {"prompt": f"Chapter {i}. The dragon woke up and", "max_new_tokens": 64}
            results.append(httpx.post(f"{container.url}/generate", json=body, timeout=300))
        except BaseException as exc:  # recorded and asserted on below
            results.append(exc)
        answered.append(time.monotonic())

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    # The gauge sums the API server's /generate and the LLM runner's /generate (one runner call per
    # API call), so 2N means all N requests are accepted and inside the model's batch.
    while in_flight(container.url) < 2 * len(threads):
        assert time.monotonic() < deadline, "requests never became in-flight"
        time.sleep(0.05)
    podman("kill", "--signal", "TERM", container.name)
    for t in threads:
        t.join(timeout=300)
    code = int(podman("wait", container.name, timeout=300).stdout.strip())
    exited = time.monotonic()  # `podman wait` returns as the container exits
    logs = container.logs()
    assert len(results) == 4
    for r in results:
        assert isinstance(r, httpx.Response) and r.status_code == 200, f"{r!r}\n{logs}"
        assert r.json()["usage"]["completion_tokens"] > 0
    assert code in CLEAN_EXITS, f"exit code {code}\n{logs}"
    assert "Traceback" not in logs, logs
    # busy until the last answer, then out promptly: an idle worker holding the container open
    # would push a real `podman stop` (10 s) or k8s grace period into SIGKILL
    lingered = exited - max(answered)
    assert lingered < EXIT_AFTER_LAST_RESPONSE_S, f"exited {lingered:.1f} s after the last response\n{logs}"


def in_flight(url: str) -> float:
    """BentoML's in-progress gauge for /generate, summed over the container's processes."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("bentoml_service_request_in_progress") and 'endpoint="/generate"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total
