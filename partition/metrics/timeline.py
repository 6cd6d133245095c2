"""A per-token timeline of one session (metrics -> `bench --plot`): where each token's time goes.

One row per hop of the chain (hop 0 at the top). Each span is drawn from its start as consecutive bars:
encode, wire, decode (the link), then queue and compute (the receiving stage). Needs matplotlib
(`pip install partition[plot]`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from partition.errors import ConfigError
from partition.metrics.spans import HopSpan

PHASES = ("encode", "wire", "decode", "queue", "compute")
COLORS = {
    "encode": "#f4a261",
    "wire": "#e76f51",
    "decode": "#e9c46a",
    "queue": "#bdbdbd",
    "compute": "#2a9d8f",
}


def plot_timeline(spans: Sequence[HopSpan], path: str | Path, session: str | None = None) -> dict[str, int]:
    """Draw the session's spans (default: the first session) to an image; returns bars drawn per phase."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'partition[plot]'") from None
    if not spans:
        raise ValueError("no spans to plot")
    session = session if session is not None else spans[0].session
    chosen = [s for s in spans if s.session == session]
    if not chosen:
        raise ValueError(f"no spans of session {session!r}")
    rows = sorted({(s.hop, s.src, s.dst) for s in chosen})
    row_of = {key: index for index, key in enumerate(rows)}

    figure, axes = plt.subplots(figsize=(12, 1.2 + 0.5 * len(rows)))
    counts = dict.fromkeys(PHASES, 0)
    for span in chosen:
        y = row_of[(span.hop, span.src, span.dst)]
        start = span.start_s
        for phase in PHASES:
            width = getattr(span, f"{phase}_s")
            if width > 0:
                axes.broken_barh([(start * 1e3, width * 1e3)], (y - 0.4, 0.8), color=COLORS[phase])
                counts[phase] += 1
            start += width
    axes.set_yticks(range(len(rows)), [f"{hop}: {src or 'client'} -> {dst}" for hop, src, dst in rows])
    axes.invert_yaxis()
    axes.set_xlabel("ms since the session started")
    axes.set_title(f"session {session}: {1 + max(s.token for s in chosen)} steps", loc="left")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[p]) for p in PHASES]
    axes.legend(
        handles, PHASES, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(PHASES), fontsize="small"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return counts
