"""Rate, latency and drop counters of one camera stream, and their diagnostic_msgs form.

Pure Python (no rclpy): the node passes the message classes in, so the statistics are testable and
reusable by the benchmark.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from typing import Any

import numpy as np

# diagnostic_msgs/DiagnosticStatus levels
OK, WARN, ERROR, STALE = 0, 1, 2, 3
MAX_ENCODING_NAMES = 8  # distinct refused encodings named on /diagnostics; the rest count as "(other)"


def percentile_ms(values: list[float] | np.ndarray, q: float) -> float:
    """The q-th percentile of durations in seconds, in milliseconds (NaN when empty)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q) * 1e3) if len(values) else math.nan


class StreamStats:
    """Counters and a sliding window of latencies for one camera (thread-safe).

    ``latency``: from the frame's arrival in the node to the publication of its features (the
    node's share). ``age``: from the image's header stamp to the publication (end to end, when
    the camera's clock agrees with the node's).
    """

    def __init__(self, name: str, window_s: float = 5.0, clock=time.monotonic):
        self.name = name
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._published: deque[tuple[float, float, float]] = deque()  # (time, latency, age)
        self._last_received = math.nan
        self._last_malformed = math.nan
        self.received = 0
        self.published = 0
        self.dropped = 0
        self.malformed: Counter[str] = Counter()
        self.refused_encodings: Counter[str] = Counter()

    def on_received(self) -> None:
        with self._lock:
            self.received += 1
            self._last_received = self._clock()

    def on_dropped(self, count: int = 1) -> None:
        with self._lock:
            self.dropped += count

    def on_malformed(self, kind: str) -> None:
        with self._lock:
            self.malformed[kind] += 1
            self._last_malformed = self._clock()

    def on_refused_encoding(self, encoding: str) -> None:
        """Count an image refused for its encoding, by name (names from the wire: cleaned and capped)."""
        name = "".join(c if c.isprintable() and c not in ",:" else "?" for c in str(encoding)[:40]) or "''"
        with self._lock:
            if name not in self.refused_encodings and len(self.refused_encodings) >= MAX_ENCODING_NAMES:
                name = "(other)"
            self.refused_encodings[name] += 1

    def on_published(self, latency_s: float, age_s: float = math.nan) -> None:
        now = self._clock()
        with self._lock:
            self.published += 1
            self._published.append((now, latency_s, age_s))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._published and self._published[0][0] < now - self.window_s:
            self._published.popleft()

    def summary(self) -> dict[str, Any]:
        """Totals, and over the window: rate (Hz) and latency / age percentiles (ms)."""
        now = self._clock()
        with self._lock:
            self._trim(now)
            window = list(self._published)
            totals = {
                "received": self.received,
                "published": self.published,
                "dropped": self.dropped,
                "malformed": sum(self.malformed.values()),
                "malformed_kinds": dict(self.malformed),
                "refused_encodings": ", ".join(f"{k}: {v}" for k, v in self.refused_encodings.most_common()),
            }
            since_received = now - self._last_received
            recent_malformed = now - self._last_malformed < self.window_s
        latencies = [w[1] for w in window]
        ages = [w[2] for w in window if not math.isnan(w[2])]
        span = min(self.window_s, window[-1][0] - window[0][0]) if len(window) > 1 else 0.0
        return {
            **totals,
            "rate_hz": (len(window) - 1) / span if span > 0 else 0.0,
            "latency_p50_ms": percentile_ms(latencies, 50),
            "latency_p99_ms": percentile_ms(latencies, 99),
            "latency_max_ms": max(latencies) * 1e3 if latencies else math.nan,
            "age_p50_ms": percentile_ms(ages, 50),
            "age_p99_ms": percentile_ms(ages, 99),
            "seconds_since_last_image": since_received,
            "malformed_recently": recent_malformed,
        }


def stream_status(stats: StreamStats, status_cls: type, key_value_cls: type, hardware_id: str = "") -> Any:
    """A diagnostic_msgs/DiagnosticStatus for one stream (classes passed in: no ROS import here)."""
    summary = stats.summary()
    if summary["received"] == 0:
        level, message = WARN, "no images received yet"
    elif not summary["seconds_since_last_image"] < stats.window_s:
        level, message = STALE, f"no images for {summary['seconds_since_last_image']:.1f} s"
    elif summary["malformed_recently"]:
        level, message = WARN, "malformed images skipped: " + ", ".join(sorted(summary["malformed_kinds"]))
        if summary["refused_encodings"]:
            message += f" (encodings refused: {summary['refused_encodings']})"
    else:
        level, message = OK, f"{summary['rate_hz']:.1f} Hz, latency p50 {summary['latency_p50_ms']:.1f} ms"
    values = []
    for key, value in summary.items():
        if key == "malformed_kinds":
            values.extend(key_value_cls(key=f"malformed_{k}", value=str(v)) for k, v in sorted(value.items()))
        elif isinstance(value, float):
            values.append(key_value_cls(key=key, value=f"{value:.3f}"))
        else:
            values.append(key_value_cls(key=key, value=str(value)))
    return status_cls(level=bytes([level]), name=stats.name, message=message, hardware_id=hardware_id, values=values)


def make_status(name: str, level: int, message: str, values: dict[str, Any] | None = None,
                hardware_id: str = "") -> Any:
    """A diagnostic_msgs/DiagnosticStatus (imported here: the rest of this module needs no ROS).

    ``values``: key -> value, floats written with 3 decimals, everything else with ``str``.
    """
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    pairs = [KeyValue(key=str(k), value=f"{v:.3f}" if isinstance(v, float) else str(v))
             for k, v in (values or {}).items()]
    return DiagnosticStatus(level=bytes([level]), name=name, message=message, hardware_id=hardware_id, values=pairs)


class DiagnosticsPublisher:
    """Publishes ``collect()`` (a list of DiagnosticStatus) on /diagnostics every ``period`` seconds.

    Shared by the nodes: ``DiagnosticsPublisher(node, 1.0, self._statuses)``; ``period`` <= 0
    publishes nothing on its own (``publish()`` still works). ``destroy()`` removes the timer and
    the publisher (a lifecycle cleanup).
    """

    def __init__(self, node: Any, period: float, collect: Any, topic: str = "/diagnostics"):
        from diagnostic_msgs.msg import DiagnosticArray

        self._node = node
        self._array_cls = DiagnosticArray
        self._collect = collect
        self.publisher = node.create_publisher(DiagnosticArray, topic, 10)
        self.timer = node.create_timer(period, self.publish) if period > 0 else None

    def publish(self) -> None:
        array = self._array_cls()
        array.header.stamp = self._node.get_clock().now().to_msg()
        array.status = list(self._collect())
        self.publisher.publish(array)

    def destroy(self) -> None:
        if self.timer is not None:
            self._node.destroy_timer(self.timer)
            self.timer = None
        if self.publisher is not None:
            self._node.destroy_publisher(self.publisher)
            self.publisher = None
