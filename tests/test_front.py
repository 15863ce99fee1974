"""Path-mode connections taken from mitmproxy by datepin's own HTTP/1.1 server (src/datepin/front.py)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Container

import pytest

from proxyproc import Proxy, fetch

from datepin.front import accepted, takes


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (b"GET /2023-11-18/simple/numpy/ HTTP/1.1\r\n", True),
        (b"HEAD /-/health HTTP/1.1\r\n", True),
        (b"GET /", True),
        (b"GET http://pypi.org/simple/ HTTP/1.1\r\n", False),  # through the proxy (HTTP_PROXY)
        (b"CONNECT pypi.org:443 HTTP/1.1\r\n", False),  # HTTPS_PROXY
        (b"OPTIONS * HTTP/1.1\r\n", False),
        (b"PRI * HTTP/2.0\r\n", False),
        (bytes.fromhex("16030100"), False),  # TLS
        (b"GE", None),  # too early to tell
        (b"GET ", None),
        (b"G" * 40, False),  # no method is that long
    ],
)
def test_which_connections_are_path_mode(first: bytes, expected: bool | None) -> None:
    assert takes(first) is expected


def test_only_clients_mitmproxy_would_accept_are_taken() -> None:
    assert accepted(("127.0.0.1", 5), block_global=True, block_private=True)
    assert accepted(("::1", 5, 0, 0), block_global=True, block_private=True)
    assert accepted(("::ffff:127.0.0.1", 5, 0, 0), block_global=True, block_private=True)
    assert accepted(("10.1.2.3", 5), block_global=True, block_private=False)
    assert not accepted(("10.1.2.3", 5), block_global=True, block_private=True)
    assert not accepted(("8.8.8.8", 5), block_global=True, block_private=False)
    assert accepted(("8.8.8.8", 5), block_global=False, block_private=False)
    assert not accepted(None, block_global=False, block_private=False)
    assert not accepted(("not an address", 5), block_global=False, block_private=False)


def _read_answers(
    sock: socket.socket, count: int, *, heads: Container[int] = (), timeout: float = 10.0
) -> list[tuple[int, bytes]]:
    """`count` HTTP/1.1 answers with Content-Length bodies, in order; those numbered in `heads`
    answer HEAD requests and have no body whatever their Content-Length."""
    sock.settimeout(timeout)
    data, answers = b"", []
    while len(answers) < count:
        bodiless = len(answers) in heads
        while (end := data.find(b"\r\n\r\n")) < 0 or (
            not bodiless and len(data) < end + 4 + _length(data[:end])
        ):
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"closed after {len(answers)} answers: {data[:200]!r}")
            data += chunk
        length = 0 if bodiless else _length(data[:end])
        status = int(data[9:12])
        answers.append((status, data[end + 4 : end + 4 + length]))
        data = data[end + 4 + length :]
    return answers


def _length(head: bytes) -> int:
    m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    return int(m.group(1)) if m else 0


def test_a_path_mode_connection_is_kept_and_its_requests_answered_in_order(proxy: Proxy) -> None:
    host = b"Host: 127.0.0.1:%d\r\n" % proxy.port
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.sendall(b"GE")  # the request line in pieces: the proxy waits to tell what it is
        time.sleep(0.2)
        s.sendall(b"T /-/health HTTP/1.1\r\n" + host + b"\r\n")
        assert _read_answers(s, 1) == [(200, b"ok\n")]
        # Three pipelined requests, then one more on the same connection.
        s.sendall(
            b"GET /-/health HTTP/1.1\r\n" + host + b"\r\n"
            b"GET /-/nowhere HTTP/1.1\r\n" + host + b"\r\n"
            b"HEAD /-/health HTTP/1.1\r\n" + host + b"\r\n"
        )
        answers = _read_answers(s, 3, heads={2})  # all three may come in one read
        assert [status for status, _ in answers] == [200, 404, 200]
        assert answers[0][1] == b"ok\n"
        # A proxy request on a path-mode connection: refused, with the reason.
        s.sendall(b"GET http://pypi.org/simple/ HTTP/1.1\r\nHost: pypi.org\r\n\r\n")
        [(status, body)] = _read_answers(s, 1)
        assert status == 400 and b"connection of their own" in body


def test_connections_that_say_nothing_or_close_early_cost_nothing(proxy: Proxy) -> None:
    for data in (b"", b"GE", b"GET /-/hea"):
        with socket.create_connection(("127.0.0.1", proxy.port)) as s:
            s.sendall(data)
    assert fetch(f"{proxy.url}/-/health").body == b"ok\n"
    assert proxy.process is not None and proxy.process.poll() is None
