"""Text tables of a run's metrics (metrics -> the terminal): what `bench` and `serve` print.

Times are shown in milliseconds; predicted-vs-measured rows show the relative error of the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from partition.metrics.aggregate import RunMetrics
from partition.metrics.spans import LinkSummary, StageSummary
from partition.metrics.stats import Distribution


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def run_table(run: RunMetrics) -> str:
    """Latency distributions across requests, then rates."""

    def row(name: str, d: Distribution | None, scale: float = 1e3, fmt: str = "{:.2f}") -> str:
        if d is None:
            return f"{name:<24}{'-':>10}{'-':>10}{'-':>10}{'-':>10}{'-':>10}"
        cells = (fmt.format(v * scale) for v in (d.mean, d.p50, d.p90, d.p99, d.max))
        return f"{name:<24}" + "".join(f"{c:>10}" for c in cells)

    lines = [
        f"{'':<24}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}",
        row("TTFT (ms)", run.ttft_s),
        row("TBT (ms)", run.tbt_s),
        row("TPOT (ms)", run.tpot_s),
        row("normalized latency (ms)", run.normalized_latency_s),
        row("fluidity-index", run.fluidity_index, scale=1.0, fmt="{:.3f}"),
        "",
        f"requests {run.n_requests} in {run.duration_s:.2f} s: "
        f"throughput {run.throughput_tokens_per_s:.1f} tokens/s, {run.throughput_requests_per_s:.2f} requests/s",
        f"goodput {run.goodput_requests_per_s:.2f} requests/s: {run.slo_attainment:.0%} meet the SLOs "
        f"({run.slo.describe()})"
        if run.slo.given()
        else "goodput: no SLO given (--slo-ttft, --slo-tpot, --slo-tbt-p99, --slo-fluidity)",
    ]
    if run.fluid_token_rate is not None:
        lines.append(f"fluid token generation rate {run.fluid_token_rate:.1f} tokens/s")
    if run.ttft_deadline_s is None:
        lines.append("fluidity-index: not walked, no first-token deadline given")
    else:
        lines.append(
            f"fluidity-index deadlines: first token {run.ttft_deadline_s * 1e3:.1f} ms, "
            f"each later token {run.tbt_deadline_s * 1e3:.1f} ms"
        )
    return "\n".join(lines)


def hop_table(links: Sequence[LinkSummary], stages: Sequence[StageSummary]) -> str:
    """Per stage: compute, queue and sessions per forward; per link: latency and bytes per token (decode
    steps)."""
    lines = [f"{'stage':<28}{'compute p50':>12}{'p99':>10}{'queue p50':>12}{'n':>7}{'batch':>7}"]
    for s in stages:
        name = f"{s.hop}: {s.device}"
        lines.append(
            f"{name:<28}{_ms(s.compute_p50_s):>12}{_ms(s.compute_p99_s):>10}{_ms(s.queue_p50_s):>12}{s.n_messages:>7}"
            f"{s.batch_mean:>7.2f}"
        )
    lines += ["", f"{'link':<28}{'latency p50':>12}{'p99':>10}{'wire p50':>12}{'B/token':>10}{'codec':>14}"]
    for link in links:
        name = f"{link.src} -> {link.dst}"
        lines.append(
            f"{name:<28}{_ms(link.latency_p50_s):>12}{_ms(link.latency_p99_s):>10}{_ms(link.wire_p50_s):>12}"
            f"{link.bytes_per_token:>10.0f}{link.codec:>14}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Comparison:
    name: str  # what is compared, e.g. "TPOT" or "edge -> server-a"
    predicted_s: float | None  # seconds; None when the plan has no prediction for it
    measured_s: float  # seconds

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured: negative when the plan was optimistic."""
        if self.predicted_s is None or self.measured_s == 0:
            return None
        return (self.predicted_s - self.measured_s) / self.measured_s


def comparison_table(rows: Sequence[Comparison]) -> str:
    """Predicted beside measured, with the prediction's relative error."""
    lines = [f"{'':<28}{'predicted ms':>14}{'measured ms':>14}{'error':>9}"]
    for r in rows:
        error = "-" if r.error is None else f"{r.error:+.1%}"
        lines.append(f"{r.name:<28}{_ms(r.predicted_s):>14}{_ms(r.measured_s):>14}{error:>9}")
    return "\n".join(lines)
