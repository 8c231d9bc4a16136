"""Internal. Field validators shared by the models, the api and every door: each takes the
field's name and a value, and returns the value to store or raises a ``ValidationError``
naming both."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import DeclarativeBase, Session

from . import schedules as sched
from .constants import JSON_DEPTH, MISFIRE_POLICIES, NAME_LENGTH
from .exceptions import ValidationError


def as_datetime(field: str, value: Any) -> datetime | None:
    """A datetime (or ISO string) as aware UTC; None stays None."""
    if value is None:
        return None
    given = value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValidationError(field, value, "not an ISO 8601 date and time") from exc
    if not isinstance(value, datetime):
        raise ValidationError(field, value, "must be a datetime")
    return sched.checked_utc(field, value, given)


class _NotJSON(ValueError):
    """NaN or Infinity in JSON text (Python's json module accepts them)."""


def _refuse_constant(constant: str) -> NoReturn:
    raise _NotJSON(constant)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: valid JSON text, but no float holds it
        raise _NotJSON(text)
    return value


#: one strict decoder for every call (building one per call costs more than small values)
_STRICT_JSON = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def parse_json(field: str, text: str | bytes) -> Any:
    """Strict JSON text: no NaN or Infinity, nested at most JSON_DEPTH levels."""
    try:
        value = _STRICT_JSON.decode(text.decode("utf-8") if isinstance(text, bytes) else text)
    except RecursionError:
        raise ValidationError(field, text, f"nested deeper than {JSON_DEPTH} levels") from None
    except _NotJSON as exc:
        raise ValidationError(field, float(str(exc)), "NaN and Infinity are not valid JSON") from None
    except ValueError as exc:
        raise ValidationError(field, text, f"not valid JSON: {exc}") from exc
    if not _nested_within(value, JSON_DEPTH):
        raise ValidationError(field, text, f"nested deeper than {JSON_DEPTH} levels")
    return value


def _nested_within(value: Any, depth: int) -> bool:
    """Whether lists, tuples and dicts nest at most ``depth`` levels; depth first and
    without recursion, so that a cycle is simply too deep."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, (list, tuple, dict)) else []
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (list, tuple, dict)):
                if level >= depth:
                    return False
                stack.append((child, level + 1))
    return True


def as_json(field: str, value: Any, kind: type) -> Any:
    """A list/dict, or a JSON string of one, checked to encode as strict JSON (no NaN or
    Infinity, no lone surrogates, nested at most JSON_DEPTH levels)."""
    text = isinstance(value, (str, bytes))
    if text:
        value = parse_json(field, value)
    if kind is list and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, kind):
        raise ValidationError(field, value, f"must be a JSON {'array' if kind is list else 'object'}")
    if not text and not _nested_within(value, JSON_DEPTH):
        raise ValidationError(field, value, f"nested deeper than {JSON_DEPTH} levels")
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise ValidationError(field, value, f"cannot be stored as JSON: {exc}") from exc
    return value


def as_name(field: str, value: Any, optional: bool = False) -> str | None:
    """A non-empty string of at most 200 characters (or None when optional)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not optional and not value.strip()):
        raise ValidationError(field, value, "must be a non-empty string")
    if len(value) > NAME_LENGTH:
        raise ValidationError(field, value, f"longer than {NAME_LENGTH} characters")
    return as_text(field, value)


def as_text(field: str, value: str) -> str:
    """``value`` if every database can store it: no NUL character (PostgreSQL refuses
    them) and no lone surrogate (not encodable as UTF-8)."""
    if "\x00" in value:
        raise ValidationError(field, value, "must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValidationError(field, value, "must be valid Unicode text (a lone surrogate)") from None
    return value


def as_int(field: str, value: Any, low: int, high: int | None = None) -> int | None:
    """An int within [low, high], or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, value, "must be a whole number")
    if value < low or (high is not None and value > high):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValidationError(field, value, f"must be {span}")
    return value


def as_misfire_policy(field: str, value: Any) -> str | None:
    """One of MISFIRE_POLICIES, or None (the configuration decides)."""
    if value is None or value in MISFIRE_POLICIES:
        return value  # type: ignore[no-any-return]
    raise ValidationError(field, value, f"must be one of {', '.join(MISFIRE_POLICIES)} (or None)")


def as_bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(field, value, "must be true or false")
    return value


def as_id(field: str, value: Any) -> int | None:
    """A row id: a whole number that an INTEGER column holds, from 1 (or None)."""
    return as_int(field, value, 1, sched.INT32_MAX)


def as_primary_key(row: Any, value: Any) -> int | None:
    """A row's own id as a writer gives it: ``as_id``, and never a change of a stored
    row's id (a free id for a new row is checked when it is written)."""
    number = as_id("id", value)
    if sa_inspect(row).persistent and number != row.id:
        raise ValidationError("id", value, "the id of a stored row cannot change")
    return number


def check_free_id(session: Session, row: Any) -> None:
    """A new row given an id of its own takes a free one (not a database error)."""
    if row.id is not None:
        with session.no_autoflush:
            found = session.get(type(row), row.id)
        if found is not None and found is not row:
            raise ValidationError("id", row.id, f"a row of {row.__tablename__} has this id")


def check_length(model: type[DeclarativeBase], field: str, value: str) -> str:
    """``value`` if it fits its VARCHAR column (PostgreSQL and MySQL refuse longer ones)."""
    length = getattr(model.__table__.c[field].type, "length", None)  # type: ignore[attr-defined]
    if length is not None and len(value) > length:
        raise ValidationError(field, value, f"longer than {length} characters")
    return value


def check_required(row: DeclarativeBase) -> None:
    """Every NOT NULL column without a default has a value: a ValidationError naming the
    first one missing, before the database refuses the row."""
    for column in row.__table__.columns:  # type: ignore[attr-defined]
        if (not column.nullable and not column.primary_key and column.default is None
                and column.server_default is None and getattr(row, column.key) is None):
            raise ValidationError(column.key, None, "is required")
