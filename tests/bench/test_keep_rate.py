"""The clean-text benchmark: its data is well-formed, and (slow) the refinery meets the goals
on its held-out split."""

import json
from collections import Counter

import pytest

from bench import keep_rate
from components.data.quality_model import load_reference
from tests.helpers import ROOT, project_params

CLEAN = ROOT / "data" / "keeprate" / "clean.jsonl"


def test_every_source_has_both_splits_and_ids_are_unique():
    rows = [json.loads(line) for line in CLEAN.read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows)
    splits = Counter((r["source"], r["split"]) for r in rows)
    for source in keep_rate.BENCH_RULE_SETS:
        assert splits[(source, "tuning")] > 0 and splits[(source, "heldout")] > 0, source
    # The reference sample is the tuning split and nothing else.
    reference = {i for i, _ in load_reference(CLEAN)}
    assert reference == {r["id"] for r in rows if r["split"] == "tuning"}


def test_planted_junk_is_deterministic_and_keeps_originals_first():
    clean = keep_rate.load_clean(CLEAN)
    docs, truth = keep_rate.split_corpus(clean, "heldout", seed=7)
    again, _ = keep_rate.split_corpus(clean, "heldout", seed=7)
    assert [d.text for d in docs] == [d.text for d in again]
    kinds = [truth[d.id]["kind"] for d in docs]
    first_junk = next(i for i, k in enumerate(kinds) if k != "clean")
    assert set(kinds[first_junk:]) <= set(keep_rate.JUNK_KINDS)
    assert set(keep_rate.JUNK_KINDS) <= set(kinds)


@pytest.mark.slow
def test_held_out_keep_rate_and_catch_rate_meet_the_goals():
    cfg = keep_rate.bench_params(project_params().curate)
    result = keep_rate.score_split(cfg, keep_rate.load_clean(CLEAN), "heldout", seed=1234)
    assert result["clean_dropped"] <= 0.10
    assert result["junk_caught"] >= 0.95
