"""Span logs (serve -> metrics): HopSpans appended to a msgpack file while serving, read back for reports.

Layout: one header map {"format", "version", "fields"}, then one msgpack array per span with the values
in the header's field order: positional records keep the file compact (no key repeated per span), and
the reader maps by the header's names, so a log with extra fields from a newer writer still reads.
A run that crashed leaves a truncated last record; `read_spans(..., allow_truncated_tail=True)` keeps
the complete ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import msgpack

from partition.errors import SpanLogError
from partition.metrics.spans import SPAN_FIELDS, HopSpan

FORMAT = "partition-spans"
VERSION = 1
_INT_FIELDS = {"token", "hop", "n_tokens", "payload_bytes", "batch"}
# Fields added since version 1, with the value a log written before them stands for.
_LATER_FIELDS = {"batch": 1}
_STR_FIELDS = {"session", "src", "dst", "codec"}


class SpanLogWriter:
    """Appends spans to a new file. Use as a context manager; `flush()` makes what is written durable."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "wb")  # noqa: SIM115 (closed by close() / __exit__)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._file.write(
            self._packer.pack({"format": FORMAT, "version": VERSION, "fields": list(SPAN_FIELDS)})
        )
        self.n_spans = 0

    def write(self, span: HopSpan) -> None:
        self._file.write(self._packer.pack([getattr(span, name) for name in SPAN_FIELDS]))
        self.n_spans += 1

    def write_all(self, spans: Iterable[HopSpan]) -> None:
        for span in spans:
            self.write(span)

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> SpanLogWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_spans(path: str | Path, spans: Iterable[HopSpan]) -> int:
    """Write a whole span log at once; returns the number of spans."""
    with SpanLogWriter(path) as writer:
        writer.write_all(spans)
        return writer.n_spans


def _span_from(values: dict[str, object], index: int, path: Path) -> HopSpan:
    kwargs = {}
    for name in SPAN_FIELDS:
        value = values.get(name, _LATER_FIELDS.get(name))
        if name in _STR_FIELDS:
            ok = isinstance(value, str)
        elif name in _INT_FIELDS:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        if not ok:
            raise SpanLogError(f"{path}: span {index} has {name}={value!r}, of the wrong type")
        kwargs[name] = value
    return HopSpan(**kwargs)


def read_spans(path: str | Path, allow_truncated_tail: bool = False) -> list[HopSpan]:
    """All spans of a log written by SpanLogWriter."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as file:
        unpacker = msgpack.Unpacker(file, raw=False, strict_map_key=True)
        spans: list[HopSpan] = []
        try:
            header = next(unpacker, None)
            if not (isinstance(header, dict) and header.get("format") == FORMAT):
                raise SpanLogError(f"{path} is not a partition span log (no {FORMAT!r} header)")
            if header.get("version") != VERSION:
                raise SpanLogError(
                    f"{path}: span log version {header.get('version')!r}; this reader knows version {VERSION}"
                )
            names = header.get("fields")
            if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
                raise SpanLogError(f"{path}: the header's fields are not a list of names")
            missing = [name for name in SPAN_FIELDS if name not in names and name not in _LATER_FIELDS]
            if missing:
                raise SpanLogError(f"{path}: the header lacks span fields {missing}")
            for index, record in enumerate(unpacker):
                if not isinstance(record, list) or len(record) != len(names):
                    raise SpanLogError(f"{path}: span {index} is not a record of {len(names)} values")
                spans.append(_span_from(dict(zip(names, record, strict=True)), index, path))
        except (msgpack.UnpackException, ValueError) as error:
            raise SpanLogError(f"{path}: corrupt span log after {len(spans)} spans ({error})") from None
        if unpacker.tell() != size and not allow_truncated_tail:
            raise SpanLogError(
                f"{path}: truncated after {len(spans)} complete spans ({size - unpacker.tell()} bytes left); "
                "read with allow_truncated_tail=True to keep them"
            )
    return spans
