"""A TCP proxy that cuts a database off, for the fault tests.

:class:`Proxy` listens on 127.0.0.1 and forwards every connection to a database server
(PostgreSQL on 5432, MariaDB on 3306). :meth:`Proxy.cut` drops every open connection and
refuses new ones, either as a server that is down (the port is closed: "connection
refused") or as a dead server behind a load balancer (each new connection is accepted
and reset at once, and counted); :meth:`Proxy.partition` stops forwarding in both
directions without closing or refusing anything (a network partition: the server and the
client each wait for an answer that never comes; new connections are accepted and held);
:meth:`Proxy.resume` lets connections through again (what was held then flows).
It also counts the connections the server itself closed (MariaDB's ``wait_timeout``).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from dataclasses import dataclass, field

#: how a cut refuses new connections
REFUSE = "refuse"  # the port is closed: connect() fails with ECONNREFUSED
RESET = "reset"  # the port accepts, then resets the connection at once

_BUFFER = 65536


def _free_port() -> int:
    """A free port below the kernel's ephemeral range, so that no outgoing connection
    takes it while the proxy's port is closed during a cut."""
    low = 32768
    with contextlib.suppress(OSError, ValueError), open(
        "/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii"
    ) as ranges:
        low = int(ranges.read().split()[0])
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for the proxy")


def _listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + 5
    while True:
        try:
            listener.bind(("127.0.0.1", port))
            break
        except OSError:
            if time.monotonic() > deadline:
                listener.close()
                raise
            time.sleep(0.05)
    listener.listen(64)
    listener.settimeout(0.1)
    return listener


def _close_listener(listener: socket.socket) -> None:
    """Stop listening at once: shutdown() wakes a thread blocked in accept() (Linux);
    close() alone would leave the port open until that accept() returns."""
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a crashed peer does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


class _Link:
    """One proxied connection: the client's socket and the server's."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.dropped = False
        self._closed = 0
        self._lock = threading.Lock()

    def shutdown(self) -> None:
        """Wake both pumps (they close the sockets)."""
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def pump_done(self) -> bool:
        """Called by each pump as it ends; True for the last one."""
        with self._lock:
            self._closed += 1
            return self._closed == 2


@dataclass
class ProxyStats:
    """What went through the proxy."""

    #: connections forwarded to the server
    forwarded: int = 0
    #: connections dropped by a cut
    dropped: int = 0
    #: connections the server closed on its own (idle timeout, server restart)
    closed_by_server: int = 0
    #: when each connection attempt was reset during a cut in ``RESET`` mode
    reset_attempts: list[float] = field(default_factory=list)
    #: (cut at, resumed at or None), time.time()
    cuts: list[tuple[float, float | None]] = field(default_factory=list)


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of one database server (a context manager)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", port: int | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port or _free_port()
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._down: str | None = None
        self._closed = threading.Event()
        #: cleared during a partition: the pumps hold what they read until it is set
        self._flowing = threading.Event()
        self._flowing.set()
        self._listener: socket.socket | None = _listen(self.port)
        self._thread = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_down(self) -> bool:
        return self._down is not None

    def url(self, url: str) -> str:
        """``url`` (a SQLAlchemy URL string) pointed at this proxy."""
        from sqlalchemy.engine import make_url

        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    # -- faults ---------------------------------------------------------------------

    def cut(self, mode: str = REFUSE) -> float:
        """Drop every open connection and refuse new ones; returns when (time.time())."""
        if mode not in (REFUSE, RESET):
            raise ValueError(f"mode must be {REFUSE!r} or {RESET!r}, not {mode!r}")
        with self._lock:
            self._down = mode
            at = time.time()
            self.stats.cuts.append((at, None))
            if mode == REFUSE and self._listener is not None:
                _close_listener(self._listener)
                self._listener = None
            links = list(self._links)
            for link in links:
                link.dropped = True
            self.stats.dropped += len(links)
        for link in links:
            link.shutdown()
        return at

    def partition(self) -> float:
        """Stop forwarding, both ways, on every connection, open or new, without closing
        any; returns when (time.time())."""
        with self._lock:
            self._flowing.clear()
            at = time.time()
            self.stats.cuts.append((at, None))
        return at

    def resume(self) -> float:
        """Let connections through again; returns when (time.time())."""
        with self._lock:
            self._flowing.set()
            if self._listener is None and not self._closed.is_set():
                self._listener = _listen(self.port)
            self._down = None
            at = time.time()
            if self.stats.cuts and self.stats.cuts[-1][1] is None:
                self.stats.cuts[-1] = (self.stats.cuts[-1][0], at)
        return at

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._closed.set()
        self._flowing.set()
        with self._lock:
            if self._listener is not None:
                _close_listener(self._listener)
                self._listener = None
            links = list(self._links)
        for link in links:
            link.dropped = True
            link.shutdown()
        self._thread.join(5)

    # -- forwarding -----------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            listener = self._listener
            if listener is None:
                time.sleep(0.02)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):  # timeout, or closed by a cut
                continue
            self._open(client)

    def _open(self, client: socket.socket) -> None:
        client.settimeout(None)
        if self._down is not None:
            self.stats.reset_attempts.append(time.time())
            _reset(client)
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)
            return
        server.settimeout(None)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client, server)
        with self._lock:
            if self._down is not None:  # cut while connecting
                _reset(client)
                server.close()
                return
            self._links.add(link)
            self.stats.forwarded += 1
        for source, target, from_server in ((client, server, False), (server, client, True)):
            threading.Thread(target=self._pump, args=(link, source, target, from_server),
                             name=f"proxy-{self.port}-pump", daemon=True).start()

    def _pump(self, link: _Link, source: socket.socket, target: socket.socket, from_server: bool) -> None:
        try:
            while True:
                data = source.recv(_BUFFER)
                self._flowing.wait()  # a partition holds data and end of stream alike
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        with self._lock:
            if from_server and not link.dropped and link in self._links:
                self.stats.closed_by_server += 1
            self._links.discard(link)
        link.shutdown()  # one side ended: end the other one too
        if link.pump_done():
            link.client.close()
            link.server.close()
