"""Errors raised by beatsqlalchemy; each subclasses the builtin it refines."""

from __future__ import annotations

from typing import Any

__all__ = [
    "BeatSQLAlchemyError",
    "DeploymentIdMissing",
    "MissingPackage",
    "PendingChanges",
    "SchemaNotReady",
    "TaskNotFound",
    "ValidationError",
]


#: longest representation of a bad value shown in a message
SHOWN_LENGTH = 1000


class BeatSQLAlchemyError(Exception):
    """Base class of every error this package raises on purpose."""


class ValidationError(BeatSQLAlchemyError, ValueError):
    """A field got a value it cannot hold; names the field and the value."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: invalid value {shown(value)}: {reason}")


class MissingPackage(ValidationError):
    """A row needs an optional package that is not installed: one line saying which,
    and how to install it."""

    def __init__(self, kind: str, package: str, extra: str) -> None:
        super().__init__(kind, package, "not installed")
        self.args = (f"{kind} schedules need the {package} package: pip install 'beatsqlalchemy[{extra}]'",)


def shown(value: Any) -> str:
    """``repr(value)``, cut to SHOWN_LENGTH characters; a stand-in when repr fails (an int
    of more than 4,300 digits, a broken ``__repr__``)."""
    try:
        text = repr(value)
    except Exception:
        if isinstance(value, int):
            digits = int(value.bit_length() * 0.30102999566398120)  # log10(2)
            digits += abs(value) >= 10**digits
            return f"<int with {digits} digits>"
        return f"<{type(value).__name__} object>"
    return text if len(text) <= SHOWN_LENGTH else f"{text[:SHOWN_LENGTH]}... ({len(text)} characters)"


class TaskNotFound(BeatSQLAlchemyError, LookupError):
    """No periodic task has the given name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no periodic task named {name!r}")


class PendingChanges(BeatSQLAlchemyError, RuntimeError):
    """An api function that commits its own work was given a session holding the caller's
    uncommitted ORM changes: it would commit them too, so it refuses and changes nothing."""

    def __init__(self, count: int) -> None:
        self.count = count
        super().__init__(
            f"the session holds {count} uncommitted change(s) of the caller; commit or roll "
            "them back first (this api function commits its own work, and only its own)"
        )


class SchemaNotReady(BeatSQLAlchemyError, RuntimeError):
    """The database schema is missing or older than this version of the package."""

    def __init__(self, url: str, current: str | None, head: str, command_url: str | None = None) -> None:
        """``url`` is shown (its password masked); ``command_url``, the same URL with
        ``<password>`` where the password goes, is the one in the command to run."""
        self.current = current
        self.head = head
        state = "has no beatsqlalchemy tables" if current is None else (
            f"is at schema revision {current}, this version needs {head}"
        )
        command_url = command_url or url
        where = (" with the password in place of <password>" if "<password>" in command_url else "")
        super().__init__(
            f"database {url} {state}; run `beatsqlalchemy --url '{command_url}' upgrade`{where} "
            "(or `beatsqlalchemy -A <your app> upgrade`, or `alembic upgrade head` from a source "
            "checkout) first"
        )


class DeploymentIdMissing(SchemaNotReady):
    """The table naming the deployment (part of every run id) does not hold exactly one id."""

    def __init__(self, table: str, found: int) -> None:
        self.current = None
        self.head = ""
        held = "none" if found == 0 else "several" if found > 1 else "an empty one"
        BeatSQLAlchemyError.__init__(
            self,
            f"{table} must hold exactly one deployment id (it holds {held}); the migrations "
            f"create it. Put one back, a new random one unless this database replaces another "
            f"one's: INSERT INTO {table} (id) VALUES ('<32 random hex digits>')",
        )
