import pytest

from components.config import ParamsError, min_paired_items
from components.evaluation import significance
from tests.helpers import project_params


def _items(pattern: str) -> dict[str, bool]:
    return {str(i): c == "1" for i, c in enumerate(pattern)}


def test_mcnemar_counts_discordant_items_and_gives_the_exact_one_sided_p_value():
    # 8 items only the challenger got right, 1 only the champion, 3 both, 2 neither.
    t = significance.mcnemar(
        _items("11111111" + "0" + "111" + "00"),
        _items("00000000" + "1" + "111" + "00"),
        confidence=0.95,
    )
    assert (t.n, t.gains, t.losses) == (14, 8, 1)
    assert t.p_better == pytest.approx(10 / 512)  # P(X >= 8), X ~ Binomial(9, 1/2)
    assert t.delta == pytest.approx(7 / 14, abs=1e-4)
    assert t.direction == "better"
    assert significance.mcnemar(_items("0" * 14), _items("1" * 14), 0.95).direction == "worse"


def test_items_are_matched_by_id_and_too_few_is_an_error():
    t = significance.mcnemar({"a": True, **_items("10101")}, _items("101010"), 0.9)
    assert t.n == 5  # item "5" and "a" are on one side only
    with pytest.raises(significance.TooFewItems, match="needs at least 5"):
        significance.mcnemar(_items("1111"), _items("0000"), 0.95)


def test_min_paired_items_is_the_smallest_set_that_can_reach_the_confidence():
    for confidence in (0.8, 0.9, 0.95, 0.99):
        n = min_paired_items(confidence)
        assert 0.5**n < 1 - confidence <= 0.5 ** (n - 1)


def test_an_eval_set_too_small_for_the_confidence_fails_when_params_load():
    with pytest.raises(ParamsError, match="cannot show a gain at promote.confidence 0.99"):
        project_params(evaluate={"max_examples": 6}, promote={"confidence": 0.99})
    assert project_params(evaluate={"max_examples": 7}, promote={"confidence": 0.99})


def test_directions_and_disagreement():
    assert significance.interval_direction(0.55, 0.9) == "better"
    assert significance.interval_direction(0.1, 0.49) == "worse"
    assert significance.interval_direction(0.4, 0.6) == "none"
    assert significance.disagreement("better", "worse")
    assert not significance.disagreement("better", "none")
    assert not significance.disagreement("worse", "worse")
