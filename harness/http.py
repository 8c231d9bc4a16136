"""Ports and HTTP for tests and benchmarks: a free port on 127.0.0.1, and a scrape of a
beat's metrics endpoint. Standard library only."""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int, token: str | None) -> tuple[int, str]:
    """The status and body of ``GET /metrics`` on 127.0.0.1:``port``, with ``token`` as a
    bearer token (None: without one)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(body: str, name: str) -> float:
    """The value of the metric ``name`` (without labels) in a scrape's ``body``."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
    assert match, f"{name} not in:\n{body}"
    return float(match.group(1))
