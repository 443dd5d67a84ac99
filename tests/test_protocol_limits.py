"""The request head's limits against a real `bentoml serve` (tests/guarded.py), over raw sockets:
trickled headers are cut off after ASKDB_HEADER_TIMEOUT_S, an oversized head is a 431, a request with
both Content-Length and Transfer-Encoding a 400 that closes the connection, ordinary requests (kept
alive past the header timeout too) unaffected. These happen in uvicorn's protocol, before any route."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time

from tests.guarded import HEADER_TIMEOUT_S, MAX_HEADER_BYTES, Guarded

CONNECTIONS = 40  # trickling clients at once (one of them could hold a connection for ever before)
MARGIN_S = 3.0  # scheduling on a shared 2-core machine


def _connect(guarded: Guarded) -> socket.socket:
    return socket.create_connection(("127.0.0.1", guarded.server.port), timeout=30)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _head(guarded: Guarded, path: str = "/databases", extra: str = "", body: bytes = b"{}") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {guarded.keys['full']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def test_trickled_headers_are_cut_off_within_the_header_timeout(guarded: Guarded) -> None:
    socks = [_connect(guarded) for _ in range(CONNECTIONS)]
    idle = _connect(guarded)  # sends nothing at all
    started = time.monotonic()
    for sock in socks:
        sock.sendall(b"POST /ask HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    closed: dict[socket.socket, tuple[float, bytes]] = {}
    deadline = started + HEADER_TIMEOUT_S + MARGIN_S
    while len(closed) < len(socks) + 1 and time.monotonic() < deadline:
        for sock in [s for s in socks if s not in closed]:
            with contextlib.suppress(OSError):  # reset: the server closed it; the read below says when
                sock.sendall(b"X")  # one more byte of a header name, never the blank line
        waiting = [s for s in [*socks, idle] if s not in closed]
        readable, _, _ = select.select(waiting, [], [], 0.3)
        for sock in readable:
            closed[sock] = (time.monotonic() - started, _read_all(sock))
    assert len(closed) == len(socks) + 1, f"{len(socks) + 1 - len(closed)} connections still open"
    for sock in socks:
        waited, response = closed[sock]
        assert HEADER_TIMEOUT_S - 0.5 <= waited <= HEADER_TIMEOUT_S + MARGIN_S, waited
        assert _status(response) == 408 and b"ASKDB_HEADER_TIMEOUT_S" in response, response[:300]
    assert closed[idle][1] == b""  # nothing was asked: closed without a response


def test_an_oversized_head_is_refused_with_431(guarded: Guarded) -> None:
    sock = _connect(guarded)
    with contextlib.suppress(OSError):  # the server may close before taking all of it
        sock.sendall(_head(guarded, extra=f"X-Big: {'a' * 100_000}\r\n"))
    response = _read_all(sock)
    assert _status(response) == 431, response[:300]
    body = json.loads(response.partition(b"\r\n\r\n")[2])
    assert str(MAX_HEADER_BYTES) in body["error"]["message"]


def test_a_head_within_the_limit_is_served(guarded: Guarded) -> None:
    sock = _connect(guarded)
    sock.sendall(_head(guarded, extra=f"X-Big: {'a' * (MAX_HEADER_BYTES // 2)}\r\nConnection: close\r\n"))
    assert _status(_read_all(sock)) == 200


def test_content_length_and_transfer_encoding_together_are_refused(guarded: Guarded) -> None:
    body = b"2\r\n{}\r\n0\r\n\r\n"
    for path, shape in (
        ("/databases", {"type", "message"}),
        ("/v1/models", {"message", "type", "param", "code"}),
    ):
        sock = _connect(guarded)
        sock.sendall(_head(guarded, path, "Transfer-Encoding: chunked\r\n", body))
        response = _read_all(sock)  # returns once the server closes the connection, as RFC 9112 says
        assert _status(response) == 400, response[:300]
        assert b"connection: close" in response.lower()
        error = json.loads(response.partition(b"\r\n\r\n")[2])["error"]
        assert set(error) == shape and "Transfer-Encoding" in error["message"]


def test_a_kept_alive_connection_outlives_the_header_timeout(guarded: Guarded) -> None:
    """The header clock starts at a head's first byte, not when the previous response ended."""
    sock = _connect(guarded)
    for _ in range(2):
        sock.sendall(_head(guarded))
        assert _status(_read_one(sock)) == 200
        time.sleep(HEADER_TIMEOUT_S + 0.5)  # idle longer than the header timeout, within keep-alive
    sock.close()


def _read_one(sock: socket.socket) -> bytes:
    """One response off a kept-alive connection (head, then Content-Length bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(v)
        for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
        if k.lower() == b"content-length"
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body
