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
        self.events: Counter[str] = Counter()  # extraction_failed, camera_info_missing, unmatched ...
        self._last_event: dict[str, float] = {}
        self._event_detail: dict[str, str] = {}
        self._first_received = math.nan
        self._last_published = math.nan

    def on_received(self) -> None:
        with self._lock:
            self.received += 1
            self._last_received = self._clock()
            if math.isnan(self._first_received):
                self._first_received = self._last_received

    def count(self, event: str, n: int = 1, detail: str = "") -> None:
        """Count ``n`` events of a kind (e.g. ``extraction_failed``); ``detail``: the latest one's text."""
        with self._lock:
            self.events[event] += n
            self._last_event[event] = self._clock()
            if detail:
                self._event_detail[event] = detail[:200]

    def set_count(self, event: str, total: int) -> None:
        """Set a total kept elsewhere (e.g. the frame queue's unmatched frames); a rise counts as recent."""
        with self._lock:
            if total != self.events.get(event, 0):
                self._last_event[event] = self._clock()
                self.events[event] = total

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
            self._last_published = now
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
            since_first_received = now - self._first_received
            since_published = now - self._last_published if self.published else math.inf
            recent_malformed = now - self._last_malformed < self.window_s
            events = dict(self.events)
            recent_events = sorted(k for k, t in self._last_event.items() if now - t < self.window_s)
            details = dict(self._event_detail)
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
            "seconds_receiving": since_first_received,
            "seconds_since_last_features": since_published,
            "malformed_recently": recent_malformed,
            "events": events,
            "recent_events": recent_events,
            "event_details": details,
        }


# events that raise a stream to WARN while recent, with what the message says
WARN_EVENTS = {
    "extraction_failed": "extraction failed",
    "camera_info_missing": "no CameraInfo received",
    "camera_info_stale": "CameraInfo too old",
    "unmatched": "frames without partners (sync)",
}


def stream_status(stats: StreamStats, status_cls: type, key_value_cls: type, hardware_id: str = "",
                  expected_rate: float = 0.0) -> Any:
    """A diagnostic_msgs/DiagnosticStatus for one stream (classes passed in: no ROS import here).

    ERROR: images have been arriving for a whole window and no features left in it. WARN: malformed
    or refused images, extraction failures, CameraInfo missing or stale, unmatched frames (each
    while seen in the last window), or an output rate below ``expected_rate`` (> 0).
    """
    summary = stats.summary()
    window = stats.window_s
    problems = []
    if summary["malformed_recently"]:
        text = "malformed images skipped: " + ", ".join(sorted(summary["malformed_kinds"]))
        if summary["refused_encodings"]:
            text += f" (encodings refused: {summary['refused_encodings']})"
        problems.append(text)
    for event in summary["recent_events"]:
        if event in WARN_EVENTS:
            detail = summary["event_details"].get(event)
            problems.append(f"{WARN_EVENTS[event]}: {summary['events'][event]}" + (f" ({detail})" if detail else ""))
    rate_low = (expected_rate > 0 and summary["seconds_receiving"] > window
                and summary["rate_hz"] < expected_rate)
    if rate_low:
        problems.append(f"output {summary['rate_hz']:.2f} Hz is below expected_rate {expected_rate:g} Hz")
    if summary["received"] == 0:
        level, message = WARN, "no images received yet"
    elif not summary["seconds_since_last_image"] < window:
        level, message = STALE, f"no images for {summary['seconds_since_last_image']:.1f} s"
    elif summary["seconds_receiving"] > window and summary["seconds_since_last_features"] > window:
        level, message = ERROR, "images arrive but no features leave"
        if problems:
            message += ": " + "; ".join(problems)
    elif problems:
        level, message = WARN, "; ".join(problems)
    else:
        level, message = OK, f"{summary['rate_hz']:.1f} Hz, latency p50 {summary['latency_p50_ms']:.1f} ms"
    values = []
    for key, value in summary.items():
        if key in ("recent_events", "event_details"):
            continue
        if key == "events":
            values.extend(key_value_cls(key=k, value=str(v)) for k, v in sorted(value.items()))
        elif key == "malformed_kinds":
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
