"""ExactSum: the correctly rounded sum (math.fsum, Fraction), independent of order and grouping."""

import math
from fractions import Fraction

import numpy as np
import pytest

from em_chunks.ops import exact_sum
from em_chunks.ops.exact_sum import ExactSum


def _exact(values) -> float:
    return float(sum((Fraction(float(v)) for v in values), Fraction(0)))


ADVERSARIAL = {
    "cancellation": [1e16, 1.0, -1e16, 1e-16, 3.0, -3.0],
    "huge_and_tiny": [1e300, 1e-300, -1e300, 5e-324, 2.0**-1074, 1.0],
    "subnormals": [2.0**-1074, 3 * 2.0**-1074, -(2.0**-1073), 2.0**-1022, -(2.0**-1023)],
    "near_overflow": [1.7e308, -1.7e308, 1.6e308, 1e292],
    "half_ulp_ties": [1.0, 2.0**-53, 2.0**-53, -(2.0**-106)],
    "signed_zeros": [0.0, -0.0, 0.0],
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_inputs_equal_fsum_and_fractions(name):
    x = np.array(ADVERSARIAL[name])
    s = ExactSum.of(x)
    assert s.value() == math.fsum(x) == _exact(x)


def test_intermediate_overflow_that_fsum_refuses_is_summed_exactly():
    x = np.array([1e308, 1e308, -1e308, -1e308, 1.0])
    with pytest.raises(OverflowError):
        math.fsum(x)
    assert ExactSum.of(x).value() == 1.0 == _exact(x)
    with pytest.raises(OverflowError):  # a total beyond float64 is refused, not returned as inf
        ExactSum.of(np.array([1.7e308, 1.7e308])).value()


@pytest.mark.parametrize("seed", [0, 1])
def test_random_magnitudes_equal_fsum(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(200_000) * 10.0 ** rng.integers(-300, 300, 200_000)
    assert ExactSum.of(x).value() == math.fsum(x)
    small = x[:2000]
    assert ExactSum.of(small).value() == _exact(small)


@pytest.mark.parametrize("block", [None, 1 << 25])
def test_many_terms_over_blocks_are_exact(block, monkeypatch):
    """Worst case for the per-exponent float64 accumulation: 2**25 + 3 terms, all with the largest
    mantissa and one exponent, in the default blocks and in the largest block the bound allows."""
    if block is not None:
        monkeypatch.setattr(exact_sum, "_BLOCK", block)
    n = (1 << 25) + 3
    x = np.full(n, float(2**53 - 1))
    assert ExactSum.of(x).units == n * (2**53 - 1) << exact_sum.UNIT_EXPONENT
    assert ExactSum.of(x).value() == float(n * (2**53 - 1))
    y = np.repeat(np.random.default_rng(5).random(1 << 10) * 2.0**52, 1000)
    y[::7] *= -1.0
    assert ExactSum.of(y).value() == math.fsum(y)


def test_order_and_grouping_do_not_matter():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(50_000) * 10.0 ** rng.integers(-20, 20, 50_000)
    whole = ExactSum.of(x)
    for _ in range(3):
        y = rng.permutation(x)
        cuts = np.sort(rng.choice(np.arange(1, y.size), 30, replace=False))
        parts = [ExactSum.of(p) for p in np.split(y, cuts)]
        rng.shuffle(parts)
        merged = ExactSum()
        for p in parts:
            merged = merged + p
        assert merged.units == whole.units
        assert merged.value() == whole.value() == math.fsum(x)


def test_difference_and_ratio_round_once():
    rng = np.random.default_rng(3)
    a, b = rng.random(500) * 1e6, rng.random(500) * 1e6
    d = ExactSum.of(a) - ExactSum.of(b)
    exact = sum(map(Fraction, a)) - sum(map(Fraction, b))
    assert d.value() == float(exact)
    assert d.ratio(7919) == float(exact / 7919)
    assert ExactSum().value() == 0.0 and ExactSum.of(np.zeros(0)).value() == 0.0
    with pytest.raises(ValueError):
        d.ratio(0)


def test_non_finite_terms_are_refused():
    for bad in (np.inf, -np.inf, np.nan):
        with pytest.raises(ValueError, match="finite"):
            ExactSum.of(np.array([1.0, bad]))
