import numpy as np

from components.data.quality_model import corrupt, cross_fit


def prose(i: int) -> str:
    return "\n".join(
        f"The survey team measured the river at station {i + k} and wrote down the results. "
        f"They compared the water levels with last year's records before going home."
        for k in range(6))


def test_corrupt_keeps_words_but_not_order():
    rng = np.random.default_rng(0)
    text = prose(1)
    bad = corrupt(text, rng)
    assert sorted(bad.split()) == sorted(text.split()) and bad != text


def test_cross_fit_separates_real_text_from_word_salad_held_out():
    high = [prose(i) for i in range(60)]
    rejected = ["buy now " * 40, "click here " * 40, "x y z " * 40] * 4
    result = cross_fit(high, rejected, folds=2, seed=0)
    assert result.n_high == 60 and result.n_low == 60 + 12
    assert result.heldout_accuracy > 0.9
    assert len(result.scores) == 60 and (result.scores > 0.5).mean() > 0.9
