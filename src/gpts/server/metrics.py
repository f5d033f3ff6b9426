"""What the server reports about itself: Prometheus metrics (GET /metrics) and one access-log line per request.

Metrics live in a registry per app, not prometheus_client's global one, so that several apps in one process (the
tests) count apart. The engines' gauges (busy slots, queue depth) are read from the serving layer when Prometheus
scrapes; the generation metrics (tokens, time to first token, latency) come from the routes, through
`observe_request`, when an answer is complete. Names follow vLLM's where there is one.

The access log is the logger "gpts.server.access", one JSON object a line: method, path, status, duration, client
and, once a route names it, the model. Never the query string, the key or a body.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("gpts.server.access")

# A CPU answers a long prompt's first token in seconds and a long reply in minutes.
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)


def log_config() -> dict[str, Any]:
    """uvicorn's logging (its log_config), with the access log's JSON lines on stdout, as they are, and the
    server's own messages beside uvicorn's on stderr. Run uvicorn with access_log=False: this log replaces its."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["line"] = {"format": "%(message)s"}
    config["handlers"]["access_lines"] = {"class": "logging.StreamHandler", "formatter": "line",
                                          "stream": "ext://sys.stdout"}
    config["loggers"]["gpts.server"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["loggers"][access_log.name] = {"handlers": ["access_lines"], "level": "INFO", "propagate": False}
    return config


class Metrics:
    """One app's metrics, in their own registry (app.state.metrics)."""

    def __init__(self, app: Any):
        self.registry = CollectorRegistry()
        self.requests = Counter("gpts_http_requests", "HTTP requests answered, by route and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.prompt_tokens = Counter("gpts_prompt_tokens", "Prompt tokens of the answered requests.", ["model"],
                                     registry=self.registry)
        self.generated_tokens = Counter("gpts_generation_tokens", "Tokens generated.", ["model"],
                                        registry=self.registry)
        self.ttft = Histogram("gpts_time_to_first_token_seconds", "From a request's arrival to its first token.",
                              ["model"], buckets=TTFT_BUCKETS, registry=self.registry)
        self.latency = Histogram("gpts_e2e_request_latency_seconds", "From a request's arrival to its last token.",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(EngineStats(app))


class EngineStats(Collector):
    """Each engine's load and prefix cache, read from the serving layer (`engine_stats()`: {model: Engine.stats()})
    at each scrape; nothing before the serving layer is up."""

    def __init__(self, app: Any):
        self.app = app

    def collect(self) -> Iterable[Metric]:
        serving = getattr(self.app.state, "serving", None)
        stats = serving.engine_stats() if serving is not None else {}
        gauges = [("gpts_busy_slots", "KV-cache slots decoding a sequence.", "busy_slots"),
                  ("gpts_slots", "KV-cache slots (--max-batch).", "max_batch"),
                  ("gpts_queue_depth", "Requests waiting for a free slot.", "waiting")]
        for name, documentation, field in gauges:
            gauge = GaugeMetricFamily(name, documentation, labels=["model"])
            for model, engine in stats.items():
                gauge.add_metric([model], engine[field])
            yield gauge
        reused = CounterMetricFamily("gpts_reused_prompt_tokens", "Prompt tokens taken from the prefix cache "
                                                                 "instead of computed.", labels=["model"])
        for model, engine in stats.items():
            reused.add_metric([model], engine["reused_prompt_tokens"])
        yield reused


def observe_request(request: Request, model: str, prompt_tokens: int, generated_tokens: int,
                    first_token_at: float | None) -> None:
    """Count one generation request when its answer is complete (or cut short): its tokens, and its time to the
    first token (`first_token_at`: time.perf_counter() when it came; None: none came) and to now, both from the
    request's arrival. The access log names the model from here on."""
    now = time.perf_counter()
    arrived = request.state.arrived  # noted by Observe
    request.state.model = model
    metrics: Metrics = request.app.state.metrics
    metrics.prompt_tokens.labels(model).inc(prompt_tokens)
    metrics.generated_tokens.labels(model).inc(generated_tokens)
    if first_token_at is not None:
        metrics.ttft.labels(model).observe(first_token_at - arrived)
    metrics.latency.labels(model).observe(now - arrived)


class Observe:
    """ASGI middleware, outermost: counts every request by route and status, and writes its access-log line when
    the answer has been sent (a stream's whole length). `routes` are the routers' routes, to name the route of a
    request refused before the router saw it (a 401)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list[BaseRoute]):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})  # request.state: the arrival for observe_request, the model from it
        state["arrived"] = started
        status: int | None = None
        recorded = False

        def record(outcome: int) -> None:
            nonlocal recorded
            recorded = True
            self.metrics.requests.labels(scope["method"], self._route(scope), str(outcome)).inc()
            client = scope.get("client")
            access_log.info(json.dumps({
                "method": scope["method"], "path": scope["path"], "status": outcome,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "client": client[0] if client else None, "model": state.get("model")}))

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False) and status:
                record(status)  # before the last bytes go: a client holding its answer finds the line written
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception:
            if not recorded:
                record(status or 500)  # 500: what ServerErrorMiddleware, outside this one, answers
            raise
        if not recorded:
            record(status or 499)  # 499, nginx's code: the client left before an answer

    def _route(self, scope: Scope) -> str:
        """The route's template (/v1/gpts/{slug}): one label per route, however many paths."""
        route = scope.get("route") or next((r for r in self.routes if r.matches(scope)[0] is Match.FULL), None)
        return getattr(route, "path", None) or "unmatched"
