"""Prometheus metrics of the control plane at ``GET /metrics``.

Two sources: every HTTP request (count and latency by route template and status, so a runner
fleet's lease polling, log streaming and uploads show up separately), and, at each scrape, the
database's counts by status (:mod:`kiln.metadata.stats`): the queue, what is running, entries
and their bytes, open upload sessions, live runners. Labels are never tenant names or ids: the
series stay bounded, and one tenant learns nothing about another from them.

Each app has its own registry, so several control planes in one process (tests, ``kiln run``)
do not share counters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiln.api.plane import ControlPlane
from kiln.errors import KilnError
from kiln.metadata.stats import plane_stats

__all__ = ["install_metrics"]

# A runner polls for work every few seconds at most and heartbeats while it runs a job.
RUNNER_LIVE_WINDOW = timedelta(minutes=2)
# Lease polls and log posts take milliseconds; uploads and long polls up to minutes.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _PlaneCollector(Collector):
    """Reads the database's counts at each scrape (a handful of ``GROUP BY`` queries)."""

    def __init__(self, plane: ControlPlane) -> None:
        self._plane = plane

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("kiln_database_up", "1 when the metadata database answered this scrape")
        try:
            with self._plane.db.session() as session:
                stats = plane_stats(session, now=datetime.now(UTC), runner_window=RUNNER_LIVE_WINDOW)
        except KilnError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, doc, counts in (
            ("kiln_runs", "Runs by status", stats.runs),
            ("kiln_jobs", "Jobs by status (queued is the queue)", stats.jobs),
            ("kiln_attempts", "Job attempts by status", stats.attempts),
            ("kiln_upload_sessions", "Blob upload sessions by state", stats.upload_sessions),
        ):
            family = GaugeMetricFamily(name, doc, labels=["status"])
            for status, count in sorted(counts.items()):
                family.add_metric([status], count)
            yield family
        entries = GaugeMetricFamily("kiln_entries", "Caches, artifacts and layers by kind and status",
                                    labels=["kind", "status"])  # fmt: skip
        entry_bytes = GaugeMetricFamily("kiln_entry_bytes", "Stored size of entries by kind and status",
                                        labels=["kind", "status"])  # fmt: skip
        for (kind, status), count in sorted(stats.entries.items()):
            entries.add_metric([kind, status], count)
            entry_bytes.add_metric([kind, status], stats.entry_bytes[(kind, status)])
        yield entries
        yield entry_bytes
        runners = GaugeMetricFamily("kiln_runners_live", f"Runners seen in the last {RUNNER_LIVE_WINDOW}")
        runners.add_metric([], stats.runners_seen)
        yield runners


def _template(scope: Scope) -> str:
    """The route's template (/v1/runs/{run_id}), never the raw path: ids would make the series unbounded.

    Rebuilt from the path and the matched path parameters, because the route object in the scope
    knows only its path within its router (/runs/{run_id}, without the /v1 it was included under).
    """
    if "route" not in scope:
        return "unmatched"  # a 404 for a path no route knows: one series for all of them
    by_value = {str(value): name for name, value in scope.get("path_params", {}).items()}
    parts = scope["path"].split("/")
    return "/".join(f"{{{by_value[part]}}}" if part in by_value else part for part in parts)


class _Measure:
    """Pure ASGI middleware (no buffering, so streamed archives and grants pass straight through)."""

    def __init__(self, app: ASGIApp, *, requests: Counter, latency: Histogram) -> None:
        self._app = app
        self._requests = requests
        self._latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is a server error

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_and_see)
        finally:
            route = _template(scope)
            self._latency.labels(scope["method"], route).observe(time.perf_counter() - started)
            self._requests.labels(scope["method"], route, str(status)).inc()


def install_metrics(app: FastAPI, plane: ControlPlane) -> None:
    """Count and time every request, and serve ``GET /metrics`` (no token, like /healthz)."""
    registry = CollectorRegistry(auto_describe=True)
    requests = Counter("kiln_http_requests", "HTTP requests by route and status",
                       ["method", "route", "status"], registry=registry)  # fmt: skip
    latency = Histogram("kiln_http_request_duration_seconds", "HTTP request latency by route",
                        ["method", "route"], buckets=_LATENCY_BUCKETS, registry=registry)  # fmt: skip
    registry.register(_PlaneCollector(plane))

    app.add_middleware(_Measure, requests=requests, latency=latency)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body = await run_in_threadpool(generate_latest, registry)  # the collector queries the database
        return Response(body, media_type=CONTENT_TYPE_LATEST)
