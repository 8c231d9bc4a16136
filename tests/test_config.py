"""BeatConfig: where the settings come from, their checks, and URL redaction."""

from __future__ import annotations

import os
import re
import socket
import types
from collections.abc import Callable, Iterator

import pytest
from celery import Celery

from beatsqlalchemy import config as config_module
from beatsqlalchemy.config import DEFAULT_URL, BeatConfig, default_identity
from beatsqlalchemy.db import redact
from beatsqlalchemy.exceptions import ValidationError

ENV = "BEAT_SQLALCHEMY_URL"
AppFactory = Callable[..., Celery]


@pytest.fixture(autouse=True)
def no_env_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without the environment variable unless they set it."""
    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture
def make_app() -> Iterator[AppFactory]:
    """Fresh Celery apps (config is cached per app), closed afterwards."""
    apps: list[Celery] = []

    def factory(**conf: object) -> Celery:
        app = Celery("config-tests", set_as_current=False)
        app.conf.update(conf)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.close()


def test_default_url_is_the_local_sqlite_file(make_app: AppFactory) -> None:
    config = BeatConfig.from_app(make_app())
    assert config.url == DEFAULT_URL == "sqlite:///celerybeat-schedule.sqlite3"


@pytest.mark.parametrize("key", ["beat_sqlalchemy_url", "BEAT_SQLALCHEMY_URL", "BEAT_SQLAlchemy_URL"])
def test_each_spelling_of_the_url_key_is_read(make_app: AppFactory, key: str) -> None:
    url = f"sqlite:////tmp/{key}.db"
    assert BeatConfig.from_app(make_app(**{key: url})).url == url


def test_url_key_precedence(make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "sqlite:////tmp/env.db")
    everything = {
        "beat_sqlalchemy_url": "sqlite:////tmp/lower.db",
        "BEAT_SQLALCHEMY_URL": "sqlite:////tmp/upper.db",
        "BEAT_SQLAlchemy_URL": "sqlite:////tmp/seed.db",
    }
    assert BeatConfig.from_app(make_app(**everything)).url == "sqlite:////tmp/lower.db"
    del everything["beat_sqlalchemy_url"]
    assert BeatConfig.from_app(make_app(**everything)).url == "sqlite:////tmp/upper.db"
    del everything["BEAT_SQLALCHEMY_URL"]
    assert BeatConfig.from_app(make_app(**everything)).url == "sqlite:////tmp/seed.db"
    del everything["BEAT_SQLAlchemy_URL"]
    assert BeatConfig.from_app(make_app(**everything)).url == "sqlite:////tmp/env.db"
    monkeypatch.delenv(ENV)
    assert BeatConfig.from_app(make_app(**everything)).url == DEFAULT_URL


def test_app_config_beats_the_environment(make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "sqlite:////tmp/env.db")
    app = make_app(BEAT_SQLAlchemy_URL="sqlite:////tmp/app.db")
    assert BeatConfig.from_app(app).url == "sqlite:////tmp/app.db"


def test_empty_values_fall_through(make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "")
    app = make_app(beat_sqlalchemy_url="", BEAT_SQLALCHEMY_URL=None)
    assert BeatConfig.from_app(app).url == DEFAULT_URL


def test_seed_style_settings_module(make_app: AppFactory) -> None:
    """The seed's ``app.config_from_object('settings')`` with ``BEAT_SQLAlchemy_URL``."""
    settings = types.ModuleType("settings")
    settings.BEAT_SQLAlchemy_URL = "mysql+pymysql://root:letsg0@127.0.0.1:3307/celerybeat?charset=utf8"  # type: ignore[attr-defined]
    app = make_app()
    app.config_from_object(settings)
    config = BeatConfig.from_app(app)
    assert config.url == settings.BEAT_SQLAlchemy_URL  # type: ignore[attr-defined]


def test_resolve_url_without_an_app(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_module.resolve_url() == DEFAULT_URL
    monkeypatch.setenv(ENV, "sqlite:////tmp/env.db")
    assert config_module.resolve_url(None) == "sqlite:////tmp/env.db"
    assert config_module.resolve_url({"BEAT_SQLALCHEMY_URL": "sqlite://"}) == "sqlite://"


def test_other_settings(make_app: AppFactory) -> None:
    app = make_app(
        beat_sqlalchemy_url="sqlite://",
        beat_sqlalchemy_engine_options={"pool_size": 3, "echo": False},
        beat_sqlalchemy_sync_interval="2.5",
        beat_sqlalchemy_watch_interval="0.25",
        beat_sqlalchemy_window=30,
        beat_sqlalchemy_batch_size=50,
        beat_sqlalchemy_identity="beat-a",
        beat_sqlalchemy_create_schema=False,
        beat_sqlalchemy_remove_missing_config_tasks=True,
        beat_sqlalchemy_misfire_grace=300,
        beat_cron_starting_deadline=120,
        beat_sqlalchemy_broker_dedup_seconds="90",
    )
    config = BeatConfig.from_app(app)
    assert config.broker_dedup_seconds == 90.0
    assert (config.misfire_grace, config.cron_starting_deadline) == (300.0, 120.0)
    assert config.engine_options == {"pool_size": 3, "echo": False}
    assert config.sync_interval == 2.5
    assert config.watch_interval == 0.25
    assert config.window == 30.0
    assert config.batch_size == 50 and isinstance(config.batch_size, int)
    assert config.identity == "beat-a"
    assert config.create_schema is False
    assert config.remove_missing_config_tasks is True


def test_defaults(make_app: AppFactory) -> None:
    config = BeatConfig.from_app(make_app())
    assert config.engine_options == {}
    assert config.sync_interval == 1.0
    assert config.watch_interval == 0.1
    assert config.window == 10.0
    assert config.batch_size == 1000
    assert config.create_schema is None
    assert config.remove_missing_config_tasks is False
    assert (config.misfire_grace, config.cron_starting_deadline) == (60.0, None)  # Celery's default
    assert config.broker_dedup_seconds == 600.0
    # a long sync interval widens the window so that nothing falls between two syncs
    assert BeatConfig.from_app(make_app(beat_sqlalchemy_sync_interval=8)).window == 16.0


def test_config_is_cached_on_the_app(make_app: AppFactory) -> None:
    app = make_app(beat_sqlalchemy_url="sqlite:////tmp/a.db")
    first = BeatConfig.from_app(app)
    assert BeatConfig.from_app(app) is first
    # the identity of one beat process does not change between calls
    assert BeatConfig.from_app(app).identity == first.identity


@pytest.mark.parametrize("key", ["beat_sqlalchemy_sync_interval", "beat_sqlalchemy_window",
                                 "beat_sqlalchemy_batch_size", "beat_sqlalchemy_misfire_grace",
                                 "beat_cron_starting_deadline"])
@pytest.mark.parametrize("value", [0, -1, "abc", "", [1], -0.5, "nan"])
def test_bad_numbers_name_the_key(make_app: AppFactory, key: str, value: object) -> None:
    app = make_app(**{key: value})
    with pytest.raises(ValidationError) as caught:
        BeatConfig.from_app(app)
    assert isinstance(caught.value, ValueError)
    assert caught.value.field == key
    assert key in str(caught.value)
    assert repr(value) in str(caught.value)


def test_default_identity_is_host_pid_random() -> None:
    identity = default_identity()
    host, pid, tail = identity.rsplit(":", 2)
    assert host == socket.gethostname()
    assert pid == str(os.getpid())
    assert re.fullmatch(r"[0-9a-f]{8}", tail)
    assert default_identity() != identity


def test_config_identity_defaults_to_a_unique_one(make_app: AppFactory) -> None:
    first = BeatConfig.from_app(make_app()).identity
    second = BeatConfig.from_app(make_app()).identity
    assert re.fullmatch(rf"{re.escape(socket.gethostname())}:{os.getpid()}:[0-9a-f]{{8}}", first)
    assert first != second


# -- redact ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("url", "secret", "expected"),
    [
        ("postgresql+psycopg://beat:s3cret@db.example:5432/celery", "s3cret",
         "postgresql+psycopg://beat:***@db.example:5432/celery"),
        ("mysql+pymysql://root:letsg0@127.0.0.1:3307/celerybeat?charset=utf8", "letsg0",
         "mysql+pymysql://root:***@127.0.0.1:3307/celerybeat?charset=utf8"),
        ("postgresql://u:p%40ss%3Aword@h/d", "p@ss:word", "postgresql://u:***@h/d"),
    ],
)
def test_redact_hides_passwords(url: str, secret: str, expected: str) -> None:
    shown = redact(url)
    assert shown == expected
    assert secret not in shown
    assert secret.replace("@", "%40").replace(":", "%3A") not in shown


@pytest.mark.parametrize(
    "url", ["sqlite:///celerybeat-schedule.sqlite3", "postgresql+psycopg://postgres@127.0.0.1/db"]
)
def test_redact_keeps_urls_without_password(url: str) -> None:
    assert redact(url) == url


def test_redact_unparsable_url_shows_nothing() -> None:
    shown = redact("not a url with password hunter2")
    assert "hunter2" not in shown
    assert shown == "<unparsable database URL>"


@pytest.mark.parametrize("key", ["beat_sqlalchemy_watch_interval", "beat_sqlalchemy_broker_dedup_seconds"])
@pytest.mark.parametrize("value", [-1, "abc", "", [1], -0.5, "nan"])
def test_bad_values_of_keys_that_zero_turns_off_name_the_key(
    make_app: AppFactory, key: str, value: object,
) -> None:
    with pytest.raises(ValidationError, match=key) as caught:
        BeatConfig.from_app(make_app(**{key: value}))
    assert repr(value) in str(caught.value)
    assert "zero or a positive number" in str(caught.value)


def test_zero_turns_the_watch_and_the_broker_dedup_off(make_app: AppFactory) -> None:
    config = BeatConfig.from_app(make_app(beat_sqlalchemy_watch_interval=0,
                                          beat_sqlalchemy_broker_dedup_seconds=0))
    assert (config.watch_interval, config.broker_dedup_seconds) == (0.0, 0.0)
