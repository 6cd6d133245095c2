"""Least-squares fits of measured times (profile): seconds as a polynomial in a token count.

Coefficients stay >= 0 (a time never shrinks as a prompt grows): with at most three terms, trying
every subset of them and keeping the best fit whose coefficients are all >= 0 is exact NNLS.
"""

from __future__ import annotations

import itertools

from partition.types import Fit


def fit_times(lengths: list[float], seconds: list[float], degree: int) -> Fit:
    """The non-negative polynomial fit of `seconds` against `lengths` (degree 1 or 2)."""
    if len(lengths) != len(seconds) or not lengths:
        raise ValueError("need as many times as lengths, and at least one")
    terms = range(degree + 1)
    best: tuple[float, tuple[float, ...]] | None = None
    for size in range(1, degree + 2):
        for chosen in itertools.combinations(terms, size):
            if len(chosen) > len(set(lengths)):
                continue  # underdetermined
            coefficients = _least_squares([[x**p for p in chosen] for x in lengths], seconds)
            if coefficients is None or min(coefficients) < 0:
                continue
            full = [0.0] * (degree + 1)
            for p, c in zip(chosen, coefficients, strict=True):
                full[p] = c
            residual = sum(
                (sum(full[p] * x**p for p in terms) - y) ** 2 for x, y in zip(lengths, seconds, strict=True)
            )
            if best is None or residual < best[0] * (1 - 1e-9):
                best = (residual, tuple(full))
    assert best is not None  # a constant alone always fits with a mean >= 0
    c = best[1] + (0.0,) * (3 - len(best[1]))
    return Fit(c[0], c[1], c[2])


def _least_squares(rows: list[list[float]], y: list[float]) -> list[float] | None:
    """Solve the normal equations (A^T A) c = A^T y by Gaussian elimination; None if singular."""
    k = len(rows[0])
    ata = [[sum(r[i] * r[j] for r in rows) for j in range(k)] for i in range(k)]
    aty = [sum(r[i] * v for r, v in zip(rows, y, strict=True)) for i in range(k)]
    for col in range(k):
        pivot = max(range(col, k), key=lambda r: abs(ata[r][col]))
        if abs(ata[pivot][col]) < 1e-300:
            return None
        ata[col], ata[pivot] = ata[pivot], ata[col]
        aty[col], aty[pivot] = aty[pivot], aty[col]
        for r in range(k):
            if r != col:
                f = ata[r][col] / ata[col][col]
                ata[r] = [a - f * b for a, b in zip(ata[r], ata[col], strict=True)]
                aty[r] -= f * aty[col]
    return [aty[i] / ata[i][i] for i in range(k)]
