"""Prometheus metrics of the transcriber, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_active = Gauge("hubbub_sessions_active", "Live sessions", registry=r)
        self.sessions_total = Counter(
            "hubbub_sessions_total", "Sessions started", ["kind"], registry=r
        )
        self.sessions_refused = Counter(
            "hubbub_sessions_refused_total", "Sessions refused", ["reason"], registry=r
        )
        self.audio_seconds = Counter(
            "hubbub_audio_seconds_total", "Audio seconds processed", registry=r
        )
        self.step_seconds = Histogram(
            "hubbub_step_seconds",
            "Time of one batched engine step",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=r,
        )
        self.step_batch = Histogram(
            "hubbub_step_batch_size",
            "Sessions per step",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.lag_seconds = Histogram(
            "hubbub_lag_seconds",
            "Audio received but not yet processed, per update",
            buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 30),
            registry=r,
        )
        self.final_latency = Histogram(
            "hubbub_final_latency_seconds",
            "From the end of a segment's audio arriving to its final being sent",
            buckets=(0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
            registry=r,
        )
        self.finals = Counter("hubbub_final_segments_total", "Final segments sent", registry=r)
        self.errors = Counter(
            "hubbub_session_errors_total", "Sessions ended by an error", ["code"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
