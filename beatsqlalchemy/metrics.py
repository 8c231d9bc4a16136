"""Prometheus metrics of a beat (extra ``[metrics]``): counters of runs and database errors,
histograms of lateness, claim and read durations, gauges of the window. No per-task labels:
per-task detail lives in the run log.

Off by default (``beat_sqlalchemy_metrics_port`` 0): beat then records into ``Metrics``,
whose methods do nothing, and ``prometheus_client`` is never imported. On, the endpoint is
served from a daemon thread on a registry of its own, behind a bearer token compared in
constant time.

Internal: not part of the public surface (see ``beatsqlalchemy.__all__``).
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .exceptions import ValidationError

logger = logging.getLogger(__name__)

#: every metric: name, kind, help (the README's table lists the same)
METRICS = (
    ("beatsqlalchemy_runs_claimed_total", "counter", "Runs this beat claimed in the database."),
    ("beatsqlalchemy_runs_sent_total", "counter", "Runs this beat handed to the broker."),
    ("beatsqlalchemy_runs_skipped_total", "counter", "Runs not sent: past their misfire grace."),
    ("beatsqlalchemy_runs_taken_over_total", "counter",
     "Runs another beat claimed and never confirmed, published again by this one."),
    ("beatsqlalchemy_runs_refused_total", "counter", "Runs the broker refused or could not route."),
    ("beatsqlalchemy_database_errors_total", "counter", "Database calls of this beat that failed."),
    ("beatsqlalchemy_database_outages_total", "counter", "Database outages (runs of failed calls)."),
    ("beatsqlalchemy_run_lateness_seconds", "histogram", "How late runs went out: sent minus slot."),
    ("beatsqlalchemy_claim_duration_seconds", "histogram", "How long a claim transaction took."),
    ("beatsqlalchemy_read_duration_seconds", "histogram", "How long a read of the schedule took."),
    ("beatsqlalchemy_window_tasks", "gauge", "Tasks due within the window beat holds."),
    ("beatsqlalchemy_seconds_since_last_read", "gauge", "Seconds since the last good read of the schedule."),
    ("beatsqlalchemy_beat_up", "gauge", "1 while this beat runs."),
)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """What beat records; this base records nothing (metrics off)."""

    def claimed(self, count: int, skipped: int, seconds: float) -> None:
        """A claim transaction took ``seconds`` and claimed ``count`` runs."""

    def sent(self, slot: datetime) -> None:
        """A run for ``slot`` went to the broker just now."""

    def taken_over(self, count: int) -> None:
        """Stale claims of another beat were taken over."""

    def refused(self) -> None:
        """The broker refused a run, or handed it back unrouted."""

    def database_error(self, outage: bool) -> None:
        """A database call failed; ``outage``: the first of a run of failures."""

    def read(self, seconds: float, window: int) -> None:
        """A good read of the schedule took ``seconds``; ``window`` tasks are held."""

    def close(self) -> None:
        """Stop serving."""


class PrometheusMetrics(Metrics):
    """Records into a registry of its own, served over HTTP with a bearer token."""

    def __init__(self) -> None:
        import prometheus_client as prom

        self.registry = prom.CollectorRegistry(auto_describe=True)
        made: dict[str, Any] = {}
        for name, kind, text in METRICS:
            short = name.removeprefix("beatsqlalchemy_")
            if kind == "counter":
                made[short] = prom.Counter(name.removesuffix("_total"), text, registry=self.registry)
            elif kind == "histogram":
                buckets = LATENESS_BUCKETS if "lateness" in name else DURATION_BUCKETS
                made[short] = prom.Histogram(name, text, buckets=buckets, registry=self.registry)
            else:
                made[short] = prom.Gauge(name, text, registry=self.registry)
        self._m = made
        self._last_read = time.monotonic()
        made["seconds_since_last_read"].set_function(lambda: time.monotonic() - self._last_read)
        made["beat_up"].set(1)
        self._server: WSGIServer | None = None

    def claimed(self, count: int, skipped: int, seconds: float) -> None:
        self._m["runs_claimed_total"].inc(count)
        if skipped:
            self._m["runs_skipped_total"].inc(skipped)
        self._m["claim_duration_seconds"].observe(seconds)

    def sent(self, slot: datetime) -> None:
        self._m["runs_sent_total"].inc()
        self._m["run_lateness_seconds"].observe(max(time.time() - slot.timestamp(), 0.0))

    def taken_over(self, count: int) -> None:
        self._m["runs_taken_over_total"].inc(count)

    def refused(self) -> None:
        self._m["runs_refused_total"].inc()

    def database_error(self, outage: bool) -> None:
        self._m["database_errors_total"].inc()
        if outage:
            self._m["database_outages_total"].inc()

    def read(self, seconds: float, window: int) -> None:
        self._last_read = time.monotonic()
        self._m["read_duration_seconds"].observe(seconds)
        self._m["window_tasks"].set(window)

    def serve(self, host: str, port: int, token: str) -> tuple[str, int]:
        """Serve ``/metrics`` (any path) on ``host:port`` from a daemon thread; returns
        the address bound (port 0 picks a free one)."""
        from prometheus_client import make_wsgi_app

        app = bearer_only(token, make_wsgi_app(self.registry))
        server = make_server(host, port, app, _Server, handler_class=_QuietHandler)
        self._server = server
        threading.Thread(target=server.serve_forever, name="beat-metrics", daemon=True).start()
        return str(server.server_address[0]), int(server.server_address[1])

    def close(self) -> None:
        self._m["beat_up"].set(0)
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def start(port: int, host: str, token: str | None) -> Metrics:
    """Beat's metrics: nothing recorded when ``port`` is 0; otherwise served on
    ``host:port`` with ``token``. ``prometheus_client`` is imported only then."""
    if not port:
        return Metrics()
    if not token:  # BeatConfig refuses this already; a guard for direct callers
        raise ValidationError("beat_sqlalchemy_metrics_token", None, "required with a metrics port")
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ValidationError("beat_sqlalchemy_metrics_port", port, "metrics need the prometheus-client "
                              "package: pip install 'beatsqlalchemy[metrics]'") from None
    metrics = PrometheusMetrics()
    bound = metrics.serve(host, port, token)
    logger.info("beat: metrics served on http://%s:%d/metrics (bearer token required)", *bound)
    return metrics


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def bearer_only(token: str, app: WSGIApp) -> WSGIApp:
    """``app`` behind ``Authorization: Bearer <token>``; anything else gets 401."""
    expected = token.encode("utf-8")

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        scheme, _, given = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        ok = hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected)
        if not (ok and scheme.lower() == "bearer"):
            start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                ("WWW-Authenticate", 'Bearer realm="beatsqlalchemy"')])
            return [b"401 Unauthorized: send Authorization: Bearer <beat_sqlalchemy_metrics_token>\n"]
        return app(environ, start_response)

    return guarded


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per scrape."""
