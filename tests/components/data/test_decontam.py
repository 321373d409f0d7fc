import json

from components.data.decontam import (
    EVAL_CONTAMINATION,
    DecontaminationFilter,
    load_eval_sets,
)
from components.data.documents import Doc

LONG_Q = (
    "Who says the following line in the play about the two lovers from Verona who "
    "quarrel at the feast"
)
SHORT_Q = "Compute the sum of twenty two and forty please"  # 9 words
FILLER = " ".join(f"filler{i}" for i in range(50))


def test_long_item_caught_by_13gram_with_punctuation_and_case_changes(tmp_path):
    f = DecontaminationFilter({"eval.jsonl": [LONG_Q]})
    leaked = Doc("d", f"{FILLER} {LONG_Q.upper().replace(' the ', ', the ')}! {FILLER}", "web")
    # The item has 19 words: all 7 of its 13-grams are in the page.
    assert f.filter(leaked) == (False, EVAL_CONTAMINATION, "eval.jsonl: 7 matching n-grams")
    assert f.counters == {"contaminated_docs.eval.jsonl": 1}


def test_partial_overlap_below_n_is_kept():
    f = DecontaminationFilter({"eval.jsonl": [LONG_Q]})
    twelve = " ".join(LONG_Q.split()[:12])
    assert f.filter(Doc("d", f"{FILLER} {twelve} {FILLER}", "web")) is True


def test_short_items_match_whole_and_tiny_items_are_ignored():
    f = DecontaminationFilter({"eval.jsonl": [SHORT_Q, "What is 2 + 2?"]})
    reason = f.filter(Doc("a", f"{FILLER} {SHORT_Q} {FILLER}", "web"))[1]
    assert reason == EVAL_CONTAMINATION
    assert f.filter(Doc("b", f"{FILLER} what is 2 2 {FILLER}", "web")) is True


def test_overlaps_reported_per_eval_set(tmp_path):
    (tmp_path / "eval.jsonl").write_text(json.dumps({"prompt": LONG_Q, "answer": "x"}) + "\n")
    (tmp_path / "prefs_test.jsonl").write_text(
        json.dumps(
            {
                "prompt": [{"role": "user", "content": SHORT_Q}],
                "chosen": [{"role": "assistant", "content": "sixty two"}],
            }
        )
        + "\n"
    )
    sets = load_eval_sets([tmp_path / "eval.jsonl", tmp_path / "prefs_test.jsonl"])
    f = DecontaminationFilter(sets)
    f.filter(Doc("a", f"{LONG_Q} {FILLER}", "web"))
    f.filter(Doc("b", f"{FILLER} {SHORT_Q} sixty two", "web"))
    f.filter(Doc("c", FILLER, "web"))
    assert f.counters == {
        "contaminated_docs.eval.jsonl": 1,
        "contaminated_docs.prefs_test.jsonl": 1,
    }


def test_a_clean_eval_set_is_counted_at_zero():
    f = DecontaminationFilter({"eval.jsonl": [LONG_Q]})
    assert f.filter(Doc("c", FILLER, "web")) is True
    assert f.counters == {"contaminated_docs.eval.jsonl": 0}
