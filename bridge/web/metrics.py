"""The web process's own metrics: requests by route and status."""

from __future__ import annotations

__all__ = ["WebMetrics"]


class WebMetrics:
    """A request counter in a registry of this app's own."""

    def __init__(self) -> None:
        """Create the registry and the counter."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

        self.registry = CollectorRegistry()
        self.content_type = CONTENT_TYPE_LATEST
        self.requests = Counter(
            "flowbridge_web_requests",
            "HTTP requests the web process answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )

    def request(self, method: str, route: str, status: int) -> None:
        """Count one answered request."""
        self.requests.labels(method, route, str(status)).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
