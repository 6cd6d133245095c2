"""Latency metrics and per-hop spans (metrics): REFERENCES.md's definitions, spans and span logs."""

from partition.metrics.aggregate import RunMetrics, Slo, summarize_run
from partition.metrics.fluidity import deadline_walk, fluidity_index, min_tbt_deadline
from partition.metrics.latency import RequestMetrics, RequestTiming, request_metrics
from partition.metrics.spanlog import SpanLogWriter, read_spans, write_spans
from partition.metrics.spans import HopSpan, LinkSummary, StageSummary, link_summaries, stage_summaries
from partition.metrics.stats import Distribution, percentile

__all__ = [
    "Distribution",
    "HopSpan",
    "LinkSummary",
    "RequestMetrics",
    "RequestTiming",
    "RunMetrics",
    "Slo",
    "SpanLogWriter",
    "StageSummary",
    "deadline_walk",
    "fluidity_index",
    "link_summaries",
    "min_tbt_deadline",
    "percentile",
    "read_spans",
    "request_metrics",
    "stage_summaries",
    "summarize_run",
    "write_spans",
]
