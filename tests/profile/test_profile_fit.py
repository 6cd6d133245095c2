import pytest

from partition.profile.fit import fit_times
from partition.types import Fit


def test_recovers_an_exact_quadratic():
    truth = Fit(2e-3, 1e-4, 3e-8)
    lengths = [16, 64, 128, 256]
    fit = fit_times(lengths, [truth.at(n) for n in lengths], degree=2)
    assert (
        fit.c0 == pytest.approx(truth.c0)
        and fit.c1 == pytest.approx(truth.c1)
        and fit.c2 == pytest.approx(truth.c2)
    )


def test_coefficients_never_go_negative():
    # times that shrink with length (noise) fit as a constant at their mean, not a negative slope
    fit = fit_times([16, 128, 512], [2.0e-3, 1.9e-3, 1.8e-3], degree=1)
    assert fit == Fit(pytest.approx(1.9e-3), 0.0, 0.0)
    # a convex curve through the origin keeps c0 = 0 rather than going below it
    fit = fit_times(
        [10, 20, 40], [1e-4 * 10 + 1e-6 * 100, 1e-4 * 20 + 1e-6 * 400, 1e-4 * 40 + 1e-6 * 1600], degree=2
    )
    assert min(fit.c0, fit.c1, fit.c2) >= 0 and fit.at(40) == pytest.approx(1e-4 * 40 + 1e-6 * 1600)


def test_a_single_length_gives_a_constant():
    assert fit_times([64, 64], [1e-3, 3e-3], degree=2) == Fit(pytest.approx(2e-3), 0.0, 0.0)
    with pytest.raises(ValueError):
        fit_times([], [], degree=1)
