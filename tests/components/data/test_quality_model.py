from dataclasses import replace

import numpy as np

from components.data.documents import Doc
from components.data.quality_model import (
    QualityThreshold,
    _vectorizer,
    corrupt,
    fit,
    fold_of,
    windows,
)


def prose(i: int, lines: int = 6) -> str:
    return "\n".join(
        f"The survey team measured the river at station {i + k} and wrote down the results. "
        f"They compared the water levels with last year's records before going home."
        for k in range(lines)
    )


def test_corrupt_keeps_words_but_not_order():
    rng = np.random.default_rng(0)
    text = prose(1)
    bad = corrupt(text, rng)
    assert sorted(bad.split()) == sorted(text.split()) and bad != text


def test_windows_are_whole_lines_of_about_the_same_size():
    text = prose(0, lines=40)
    parts = windows(text, 1000)
    assert "\n".join(parts) == text
    assert all(1000 <= len(p) < 1500 for p in parts[:-1]) and len(parts[-1]) >= 500
    assert windows("short", 1000) == ["short"]


def test_trained_on_the_reference_it_separates_text_from_word_salad_held_out():
    reference = [(f"h{i}", prose(i)) for i in range(60)]
    result = fit(reference, keep=0.9, folds=2, seed=0)
    assert result.heldout_accuracy > 0.9
    # The threshold keeps the target share of the reference, scored out of fold.
    assert 0.88 <= result.reference_kept <= 0.95
    rng = np.random.default_rng(1)
    unseen = [prose(100 + i) for i in range(20)]
    salad = [corrupt(t, rng) for t in unseen]
    scores = result.model.score([f"u{i}" for i in range(40)], unseen + salad)
    assert scores[:20].min() > scores[20:].max()
    assert (scores[20:] < result.model.threshold).all()


def test_score_does_not_depend_on_length():
    result = fit([(f"h{i}", prose(i)) for i in range(60)], keep=0.9, seed=0)
    short, long = prose(500, lines=8), prose(500, lines=80)
    a, b = result.model.score(["x", "x"], [short, long])
    assert abs(a - b) < 0.1


def test_each_document_is_scored_by_the_model_that_did_not_train_on_it():
    reference = [(f"h{i}", prose(i)) for i in range(40)]
    model = fit(reference, keep=0.9, folds=2, seed=0).model
    doc_id, text = reference[0]
    own = model.models[fold_of(doc_id, 2)].predict_proba(_vectorizer().transform([text]))[0, 1]
    assert model.score([doc_id], [text])[0] == own
    assert {fold_of(i, 2) for i, _ in reference} == {0, 1}  # both folds are used


def test_threshold_step_tags_scores_and_quarantines_below():
    fitted = fit([(f"h{i}", prose(i)) for i in range(40)], keep=0.9, seed=0).model
    model = replace(fitted, threshold=0.5)
    rng = np.random.default_rng(2)
    docs = [Doc("good", prose(900), "s"), Doc("bad", corrupt(prose(901), rng), "s")]
    out = QualityThreshold(model).run(docs)
    assert [d.id for d in out.kept] == ["good"] and out.kept[0].quality is not None
    assert [r.id for r in out.rejected] == ["bad"]


def test_a_source_can_keep_another_share_of_the_reference():
    fitted = fit([(f"h{i}", prose(i)) for i in range(40)], keep=0.9, seed=0).model
    assert fitted.threshold_for(0.9) == fitted.threshold
    assert fitted.threshold_for(0.99) < fitted.threshold and fitted.threshold_for(None) == 0.0
    docs = [Doc("a", prose(900), "web"), Doc("b", prose(900), "docs")]
    score = fitted.score(["a"], [prose(900)])[0]
    # Between the two thresholds: the web source drops it, the docs source keeps it.
    step = QualityThreshold(replace(fitted, threshold=score + 0.01), {"docs": score - 0.01})
    out = step.run(docs)
    assert [d.id for d in out.kept] == ["b"] and [r.id for r in out.rejected] == ["a"]
