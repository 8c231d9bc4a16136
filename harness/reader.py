"""A reader of the task messages beat sends: :class:`QueueReader` consumes one Celery queue
on the broker in a thread, without a worker, and records every message as it arrives: task
id, task name, arguments, content type and the time it was received."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Message:
    """One task message, as read from the broker."""

    id: str
    task: str
    received: float
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    args: list[Any] | None
    kwargs: dict[str, Any] | None


class QueueReader:
    """Consumes a Celery queue in a thread (no worker) and records every message."""

    def __init__(self, broker_url: str, queue: str) -> None:
        self.broker_url = broker_url
        self.queue = queue
        self.messages: list[Message] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reader-{queue}", daemon=True)

    def __enter__(self) -> QueueReader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.delete_queue()

    def _kombu_queue(self) -> Any:
        from kombu import Exchange, Queue

        # what Celery declares for ``task_default_queue``
        return Queue(self.queue, Exchange(self.queue, type="direct"), routing_key=self.queue)

    def start(self) -> None:
        """Declare the queue and consume; returns once the consumer is ready."""
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the broker consumer did not start")
        if self.error is not None:
            raise RuntimeError(f"the broker consumer failed: {self.error!r}") from self.error

    def _run(self) -> None:
        from kombu import Connection, Consumer

        try:
            with Connection(self.broker_url) as connection, Consumer(
                connection, [self._kombu_queue()], on_message=self._on_message, no_ack=True,
            ):
                self._ready.set()
                while not self._stop.is_set():
                    with contextlib.suppress(socket.timeout, TimeoutError):
                        connection.drain_events(timeout=0.1)
        except BaseException as exc:  # reported by the test thread
            self.error = exc
            self._ready.set()

    def _on_message(self, message: Any) -> None:
        received = time.time()
        headers = dict(message.headers or {})
        args: list[Any] | None = None
        kwargs: dict[str, Any] | None = None
        if message.content_type == "application/json":  # never unpickle what we read
            raw = message.body
            if isinstance(raw, bytes):
                raw = raw.decode(message.content_encoding or "utf-8")
            body = json.loads(raw)
            if isinstance(body, list) and len(body) >= 2:
                args, kwargs = list(body[0]), dict(body[1])
        self.messages.append(Message(
            id=str(headers.get("id")), task=str(headers.get("task")), received=received,
            content_type=str(message.content_type), content_encoding=str(message.content_encoding),
            headers=headers, args=args, kwargs=kwargs,
        ))

    def received(self, since: float = 0.0, until: float = float("inf")) -> list[Message]:
        """The messages received in [since, until)."""
        return [m for m in list(self.messages) if since <= m.received < until]

    def wait(self, count: int, timeout: float, since: float = 0.0, what: str = "messages") -> list[Message]:
        """Wait until ``count`` messages arrived after ``since``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.received(since)
            if len(found) >= count:
                return found
            if self.error is not None:
                raise RuntimeError(f"the broker consumer failed: {self.error!r}") from self.error
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {count} {what} "
                                     f"(got {len(found)})")
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def delete_queue(self) -> None:
        """Remove the queue and its binding from the broker."""
        from kombu import Connection

        with contextlib.suppress(Exception), Connection(self.broker_url) as connection:
            self._kombu_queue()(connection.default_channel).delete()
