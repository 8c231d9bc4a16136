"""Errors raised by beatsqlalchemy; each subclasses the builtin it refines."""

from __future__ import annotations

from typing import Any


class BeatSQLAlchemyError(Exception):
    """Base class of every error this package raises on purpose."""


class ValidationError(BeatSQLAlchemyError, ValueError):
    """A field got a value it cannot hold; names the field and the value."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: invalid value {value!r}: {reason}")


class TaskNotFound(BeatSQLAlchemyError, LookupError):
    """No periodic task has the given name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no periodic task named {name!r}")


class SchemaNotReady(BeatSQLAlchemyError, RuntimeError):
    """The database schema is missing or older than this version of the package."""

    def __init__(self, url: str, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        state = "has no beatsqlalchemy tables" if current is None else (
            f"is at schema revision {current}, this version needs {head}"
        )
        super().__init__(
            f"database {url} {state}; run `beatsqlalchemy --url '{url}' upgrade` "
            "(or `alembic upgrade head` from a source checkout) first"
        )
