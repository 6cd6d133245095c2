"""Counters, gauges and histograms in Prometheus' text exposition format (metrics), for `GET /metrics`.

    requests = Counter("partition_requests_total", "Requests answered.", ("outcome",))
    requests.inc(outcome="ok")
    ttft = Histogram("partition_time_to_first_token_seconds", "...", TTFT_BUCKETS_S)
    ttft.observe(0.18)
    text = render([requests, ttft])      # what a Prometheus server scrapes

Request threads record while a scrape renders: every metric guards its values with its own lock.
Histogram buckets are cumulative (`le`), with `+Inf`, `_sum` and `_count`, as the format defines.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Sequence

LabelValues = tuple[str, ...]


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(labels)}")
        return tuple(str(labels[name]) for name in self.labels)

    def _label_text(self, values: LabelValues, extra: str = "") -> str:
        pairs = [f'{name}="{_escape(value)}"' for name, value in zip(self.labels, values, strict=True)]
        if extra:
            pairs.append(extra)
        return "{" + ",".join(pairs) + "}" if pairs else ""

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {} if labels else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up, not by {amount}")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            values = sorted(self._values.items())
        return [f"{self.name}{self._label_text(key)} {_number(value)}" for key, value in values]


class Gauge(_Metric):
    """A value read when scraped (the number of requests running now, ...)."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        super().__init__(name, help_text)
        self.read = read

    def samples(self) -> list[str]:
        return [f"{self.name} {_number(self.read())}"]


class CountRead(Gauge):
    """A count kept elsewhere and only ever growing (the workers' reloads), read when scraped."""

    kind = "counter"


class Info(_Metric):
    """Labels worth knowing (the plan served), as a gauge of value 1. `read` gives them when scraped
    (a re-plan changes the plan), with the same names every time."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], dict[str, str]]) -> None:
        super().__init__(name, help_text, tuple(read()))
        self.read = read

    def samples(self) -> list[str]:
        labels = self.read()
        if tuple(labels) != self.labels:
            raise ValueError(f"{self.name}: labels {tuple(labels)} are not the declared {self.labels}")
        return [f"{self.name}{self._label_text(tuple(str(v) for v in labels.values()))} 1"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> None:
        super().__init__(name, help_text, labels)
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"{self.name}: buckets must be increasing and distinct, got {buckets}")
        self.buckets = tuple(float(b) for b in buckets)
        self._series: dict[LabelValues, list] = {}  # key -> [counts per bucket (+Inf last), sum]

    def observe(self, value: float, **labels: str) -> None:
        if math.isnan(value):
            return  # no time to record (a request of one token has no TPOT)
        key = self._key(labels)
        index = bisect.bisect_left(self.buckets, value)  # the first bucket with le >= value
        with self._lock:
            series = self._series.setdefault(key, [[0] * (len(self.buckets) + 1), 0.0])
            series[0][index] += 1
            series[1] += value

    def count(self, **labels: str) -> int:
        with self._lock:
            series = self._series.get(self._key(labels))
            return sum(series[0]) if series else 0

    def samples(self) -> list[str]:
        with self._lock:
            series = sorted((key, (list(counts), total)) for key, (counts, total) in self._series.items())
        lines = []
        for key, (counts, total) in series:
            running = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                running += count
                le = "+Inf" if bound == math.inf else _number(bound)
                labels = self._label_text(key, 'le="' + le + '"')
                lines.append(f"{self.name}_bucket{labels} {running}")
            lines.append(f"{self.name}_sum{self._label_text(key)} {_number(total)}")
            lines.append(f"{self.name}_count{self._label_text(key)} {running}")
        return lines


def render(metrics: Iterable[_Metric]) -> str:
    """The text a Prometheus server scrapes (Content-Type: text/plain; version=0.0.4)."""
    lines = []
    for metric in metrics:
        lines += metric.header() + metric.samples()
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))
