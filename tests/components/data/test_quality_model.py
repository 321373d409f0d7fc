import numpy as np

from components.data.quality_model import _vectorizer, corrupt, fit, fold_of


def prose(i: int) -> str:
    return "\n".join(
        f"The survey team measured the river at station {i + k} and wrote down the results. "
        f"They compared the water levels with last year's records before going home."
        for k in range(6)
    )


def test_corrupt_keeps_words_but_not_order():
    rng = np.random.default_rng(0)
    text = prose(1)
    bad = corrupt(text, rng)
    assert sorted(bad.split()) == sorted(text.split()) and bad != text


def test_cross_fit_separates_real_text_from_word_salad_held_out():
    high = [(f"h{i}", prose(i)) for i in range(60)]
    rejected = [
        (f"r{i}", t) for i, t in enumerate(["buy now " * 40, "click here " * 40, "x y z " * 40] * 4)
    ]
    result = fit(high, rejected, folds=2, seed=0)
    assert result.n_high == 60 and result.n_low == 60 + 12
    assert result.heldout_accuracy > 0.9
    scores = result.model.score([i for i, _ in high], [t for _, t in high])
    assert len(scores) == 60 and (scores > 0.5).mean() > 0.9


def test_each_document_is_scored_by_the_model_that_did_not_train_on_it():
    high = [(f"h{i}", prose(i)) for i in range(40)]
    rejected = [(f"r{i}", "buy now " * (30 + i)) for i in range(20)]
    model = fit(high, rejected, folds=2, seed=0).model
    doc_id, text = high[0]
    own = model.models[fold_of(doc_id, 2)].predict_proba(_vectorizer().transform([text]))[0, 1]
    assert model.score([doc_id], [text])[0] == own
    assert {fold_of(i, 2) for i, _ in high} == {0, 1}  # both folds are used
