"""Plain data every part shares: the vocabulary of profile -> plan -> deploy -> serve -> metrics.

A model is a list of units `[embed, block.0 .. block.{N-1}, head]` (head = final norm + LM head), so a
model with N blocks has N + 2 units. Every layer range in the project is a half-open `Segment` over
that list.
"""

from __future__ import annotations

from dataclasses import dataclass

EMBED = "embed"
BLOCK = "block"
HEAD = "head"


def n_units(n_blocks: int) -> int:
    """Number of units of a model with `n_blocks` transformer blocks (embed + blocks + head)."""
    return n_blocks + 2


def unit_name(index: int, n_blocks: int) -> str:
    """`embed`, `block.i` or `head` for unit `index` of a model with `n_blocks` blocks."""
    if not 0 <= index < n_units(n_blocks):
        raise IndexError(f"unit {index} is outside 0..{n_units(n_blocks) - 1}")
    if index == 0:
        return EMBED
    if index == n_blocks + 1:
        return HEAD
    return f"{BLOCK}.{index - 1}"


def unit_kind(index: int, n_blocks: int) -> str:
    """`embed`, `block` or `head`: the kind of unit `index` (all blocks share one cost profile)."""
    return unit_name(index, n_blocks).split(".")[0]


@dataclass(frozen=True, order=True)
class Segment:
    """A half-open range `[start, end)` of units."""

    start: int  # first unit owned (inclusive)
    end: int  # one past the last unit owned

    def __post_init__(self) -> None:
        if not (isinstance(self.start, int) and isinstance(self.end, int)):
            raise TypeError(f"segment bounds must be integers, got [{self.start!r}, {self.end!r})")
        if not 0 <= self.start < self.end:
            raise ValueError(f"segment [{self.start}, {self.end}) is empty or negative")

    def __len__(self) -> int:
        return self.end - self.start

    def __contains__(self, unit: object) -> bool:
        return isinstance(unit, int) and self.start <= unit < self.end

    def __str__(self) -> str:
        return f"[{self.start},{self.end})"

    @property
    def has_embed(self) -> bool:
        return self.start == 0

    def has_head(self, n_blocks: int) -> bool:
        return self.end == n_units(n_blocks)

    def blocks(self, n_blocks: int) -> range:
        """Indices of the transformer blocks (0-based block numbers) this segment owns."""
        return range(max(self.start, 1) - 1, min(self.end, n_blocks + 1) - 1)

    def check_within(self, n_blocks: int) -> None:
        if self.end > n_units(n_blocks):
            raise ValueError(
                f"segment {self} runs past the model's {n_units(n_blocks)} units "
                f"(embed, {n_blocks} blocks, head)"
            )

    @staticmethod
    def whole(n_blocks: int) -> Segment:
        return Segment(0, n_units(n_blocks))

    @staticmethod
    def parse(text: str) -> Segment:
        """Parse `start:end` or `[start,end)`."""
        cleaned = text.strip().lstrip("[").rstrip(")")
        sep = ":" if ":" in cleaned else ","
        try:
            start, end = (int(part) for part in cleaned.split(sep))
        except ValueError:
            raise ValueError(f"cannot read a segment from {text!r}: write start:end, e.g. 0:12") from None
        return Segment(start, end)
