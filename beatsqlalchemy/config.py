"""One object reading every ``beat_sqlalchemy_*`` setting from a Celery app.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from .exceptions import ValidationError

DEFAULT_URL = "sqlite:///celerybeat-schedule.sqlite3"
URL_ENV = "BEAT_SQLALCHEMY_URL"
#: Older spellings of ``beat_sqlalchemy_url`` accepted for compatibility.
URL_ALIASES = ("beat_sqlalchemy_url", "BEAT_SQLALCHEMY_URL", "BEAT_SQLAlchemy_URL")


def hide_urls_in_celery_reports() -> None:
    """Make Celery mask our URL settings, in every spelling, wherever it shows the
    configuration (``celery report``, ``celery inspect conf``): it masks the values of
    setting names matching its ``HIDDEN_SETTINGS`` pattern, which names none of ours."""
    from celery.app import utils

    hidden = utils.HIDDEN_SETTINGS
    if not all(hidden.search(key) for key in URL_ALIASES):
        utils.HIDDEN_SETTINGS = re.compile(f"{hidden.pattern}|SQLALCHEMY_URL", hidden.flags | re.IGNORECASE)


def default_identity() -> str:
    """``host:pid:random``, unique per beat process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def resolve_url(conf: Any = None) -> str:
    """The database URL: app config, then the environment, then the SQLite default."""
    if conf is not None:
        for key in URL_ALIASES:
            value = conf.get(key)
            if value:
                return str(value)
    return os.environ.get(URL_ENV) or DEFAULT_URL


@dataclass(frozen=True)
class BeatConfig:
    """The settings beatsqlalchemy reads; see the README's configuration table."""

    url: str = DEFAULT_URL
    engine_options: dict[str, Any] = field(default_factory=dict)
    sync_interval: float = 1.0
    #: with a change watch (PostgreSQL, a SQLite file): seconds between its checks; 0: none
    watch_interval: float = 0.1
    window: float = 10.0
    batch_size: int = 1000
    identity: str = field(default_factory=default_identity)
    claim_timeout: float = 30.0
    run_log_days: float = 7.0
    create_schema: bool | None = None
    remove_missing_config_tasks: bool = False
    #: a run more than this late counts as missed, for tasks whose misfire policy is "skip"
    misfire_grace: float = 60.0
    #: Celery's ``beat_cron_starting_deadline``: crontab runs later than this are skipped
    cron_starting_deadline: float | None = None
    #: on a Redis broker: how long a pushed run's task id is kept to refuse a second copy; 0: off
    broker_dedup_seconds: float = 600.0
    #: beat's (and run-once workers') database calls: no answer within this is an outage; 0: no bound
    database_timeout: float = 5.0
    #: the web console's users: name -> password hash (``beatsqlalchemy web-password``)
    web_users: dict[str, str] = field(default_factory=dict)
    #: the key signing the web console's session cookie
    web_secret: str | None = None
    #: seconds between the heartbeats beat writes to ``beatsqlalchemy_beat``; 0: none
    heartbeat_interval: float = 5.0
    #: the port beat serves Prometheus metrics on (0: none), its address, and the bearer token
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    metrics_token: str | None = field(default=None, repr=False)
    #: workers: record each beat run's outcome in the run log (``beatsqlalchemy.outcomes``)
    track_outcomes: bool = False
    #: the bearer token of the web console's ``GET /health`` (None: a logged-in session only)
    web_health_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_app(cls, app: Any) -> BeatConfig:
        """Read the settings from ``app.conf`` (cached on the app)."""
        cached = getattr(app, "_beatsqlalchemy_config", None)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        conf = app.conf
        sync = _positive(conf, "beat_sqlalchemy_sync_interval", 1.0)
        config = cls(
            url=resolve_url(conf),
            engine_options=dict(conf.get("beat_sqlalchemy_engine_options") or {}),
            sync_interval=sync,
            watch_interval=_positive(conf, "beat_sqlalchemy_watch_interval", 0.1, zero=True),
            window=_positive(conf, "beat_sqlalchemy_window", max(10.0, 2 * sync)),
            batch_size=int(_positive(conf, "beat_sqlalchemy_batch_size", 1000)),
            identity=str(conf.get("beat_sqlalchemy_identity") or default_identity()),
            claim_timeout=_positive(conf, "beat_sqlalchemy_claim_timeout", 30.0),
            run_log_days=_positive(conf, "beat_sqlalchemy_run_log_days", 7.0),
            create_schema=conf.get("beat_sqlalchemy_create_schema"),
            remove_missing_config_tasks=bool(
                conf.get("beat_sqlalchemy_remove_missing_config_tasks", False)
            ),
            misfire_grace=_positive(conf, "beat_sqlalchemy_misfire_grace", 60.0),
            cron_starting_deadline=(
                None if conf.get("beat_cron_starting_deadline") is None
                else _positive(conf, "beat_cron_starting_deadline", 0.0)
            ),
            broker_dedup_seconds=_positive(conf, "beat_sqlalchemy_broker_dedup_seconds", 600.0, zero=True),
            database_timeout=_positive(conf, "beat_sqlalchemy_database_timeout", 5.0, zero=True),
            **_web_settings(conf),
            **_observability(conf),
            track_outcomes=_flag(conf, "beat_sqlalchemy_track_outcomes"),
            web_health_token=web_health_token(conf.get("beat_sqlalchemy_web_health_token")),
        )
        app._beatsqlalchemy_config = config
        return config


def _positive(conf: Any, key: str, default: float, zero: bool = False) -> float:
    """The number under ``key``: above 0 (or at least 0 with ``zero``)."""
    value = conf.get(key)
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not (number > 0 or (zero and number == 0)):  # NaN too
        reason = "must be zero or a positive number" if zero else "must be a positive number"
        raise ValidationError(key, value, reason)
    return number


# -- the web console's settings ----------------------------------------------------------------

def _web_settings(conf: Any) -> dict[str, Any]:
    """``beat_sqlalchemy_web_users`` ({name: password hash}) and ``beat_sqlalchemy_web_secret``."""
    users = conf.get("beat_sqlalchemy_web_users") or {}
    if not isinstance(users, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v for k, v in users.items()):
        raise ValidationError("beat_sqlalchemy_web_users", "<hidden>",
                              "must map user names to password hashes (beatsqlalchemy web-password)")
    secret = conf.get("beat_sqlalchemy_web_secret")
    if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
        raise ValidationError("beat_sqlalchemy_web_secret", "<hidden>",
                              "must be a string of at least 16 characters")
    return {"web_users": dict(users), "web_secret": secret}


# -- heartbeats and metrics --------------------------------------------------------------

def _observability(conf: Any) -> dict[str, Any]:
    """The heartbeat and metrics settings. A metrics port needs a token: nothing of ours
    opens a port without authentication."""
    number = _positive(conf, "beat_sqlalchemy_metrics_port", 0, zero=True)
    if number != int(number) or number > 65535:
        raise ValidationError("beat_sqlalchemy_metrics_port", conf.get("beat_sqlalchemy_metrics_port"),
                              "must be a port number (0 to 65535)")
    port = int(number)
    token = conf.get("beat_sqlalchemy_metrics_token")
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ValidationError("beat_sqlalchemy_metrics_token", "***", "must be a non-empty string")
    if port and token is None:
        raise ValidationError("beat_sqlalchemy_metrics_token", None, "required when beat_sqlalchemy_"
                              "metrics_port is set: Prometheus must send it as a bearer token")
    host = conf.get("beat_sqlalchemy_metrics_host") or "127.0.0.1"
    if not isinstance(host, str):
        raise ValidationError("beat_sqlalchemy_metrics_host", host, "must be a host name or address")
    return {
        "heartbeat_interval": _positive(conf, "beat_sqlalchemy_heartbeat_interval", 5.0, zero=True),
        "metrics_port": port,
        "metrics_host": host,
        "metrics_token": token,
    }
def _flag(conf: Any, key: str) -> bool:
    """The boolean under ``key`` (False when unset): True, False, or 1, 0, "true", "false"..."""
    value = conf.get(key)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValidationError(key, value, "must be true or false")


# -- the web console's health endpoint -------------------------------------------------------

#: a health token is at least this long (it is compared in constant time, never logged)
HEALTH_TOKEN_LENGTH = 16


def web_health_token(token: Any) -> str | None:
    """``beat_sqlalchemy_web_health_token``: None, or a string of at least 16 characters."""
    if token is not None and (not isinstance(token, str) or len(token.strip()) < HEALTH_TOKEN_LENGTH):
        raise ValidationError("beat_sqlalchemy_web_health_token", "<hidden>",
                              f"must be a string of at least {HEALTH_TOKEN_LENGTH} characters")
    return token
