"""Prometheus metrics, one registry per server (no global state, tests stay isolated)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Label used for every ``user`` beyond the first ``max_users`` seen.
OTHER_USERS = "__other__"
NO_USER = "__none__"

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """What ``/metrics`` exposes."""

    def __init__(self, max_users: int = 100) -> None:
        self.registry = CollectorRegistry()
        self.max_users = max_users
        self._users: set[str] = set()
        self.requests = Counter(
            "diffuserve_requests", "Image generation requests by model and HTTP status",
            ["model", "status"], registry=self.registry)
        self.images_generated = Counter(
            "diffuserve_images_generated", "Images drawn", ["model"], registry=self.registry)
        self.queue_depth = Gauge(
            "diffuserve_queue_depth", "Requests waiting for their model", ["model"],
            registry=self.registry)
        self.batch_images = Histogram(
            "diffuserve_batch_images", "Images per batched pipeline run", ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=self.registry)
        self.queue_wait = Histogram(
            "diffuserve_queue_wait_seconds", "Time from admission to the start of drawing",
            ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.generation_seconds = Histogram(
            "diffuserve_generation_seconds", "Duration of a batched pipeline run",
            ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.request_seconds = Histogram(
            "diffuserve_request_seconds", "Generation request latency, admission to response",
            ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.model_loads = Counter(
            "diffuserve_model_loads", "Models loaded after the start (on demand or by an "
            "admin)", ["model"], registry=self.registry)
        self.model_unloads = Counter(
            "diffuserve_model_unloads", "Models unloaded, by why: lru (room for another), "
            "idle (idle_unload_seconds), budget (--device-memory-budget) or admin",
            ["model", "reason"], registry=self.registry)
        self.model_load_seconds = Histogram(
            "diffuserve_model_load_seconds", "Duration of a model's load after the start",
            ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.user_requests = Counter(
            "diffuserve_user_requests",
            f"Requests by the `user` field (the first {max_users} users; then "
            f"{OTHER_USERS!r})", ["user"], registry=self.registry)
        self.rate_limited = Counter(
            "diffuserve_rate_limited", "Requests refused by a per-key limit",
            registry=self.registry)
        self.rate_limit_fallback = Counter(
            "diffuserve_rate_limit_fallback",
            "Requests whose per-key limits were checked in this process's memory, each "
            "process counting alone: the shared limits' storage did not answer",
            registry=self.registry)

    def count_user(self, user: str | None) -> None:
        if user is None:
            label = NO_USER
        elif user in self._users:
            label = user
        elif len(self._users) < self.max_users:
            self._users.add(user)
            label = user
        else:
            label = OTHER_USERS
        self.user_requests.labels(label).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
