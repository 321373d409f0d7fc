"""The clean-text benchmark: its data is well-formed, and (slow) the refinery meets the goals
on its held-out split."""

from collections import Counter

import pytest

from bench import keep_rate
from components.data.quality_model import load_reference
from tests.helpers import ROOT, project_params

CLEAN = ROOT / "data" / "keeprate" / "clean.jsonl"
DOCS_HELDOUT = ROOT / "data" / "keeprate" / "docs_heldout.jsonl"


def test_every_source_has_both_splits_and_ids_are_unique():
    rows = keep_rate.load_clean(CLEAN, DOCS_HELDOUT)
    assert len({r["id"] for r in rows}) == len(rows)
    splits = Counter((r["source"], r["split"]) for r in rows)
    held_whole = {r["source"] for r in rows if r["split"] == "docs_heldout"}
    assert held_whole == {"stdlib_docstrings"}
    for source in set(keep_rate.BENCH_RULE_SETS) - held_whole:
        assert splits[(source, "tuning")] > 0 and splits[(source, "heldout")] > 0, source
    for source in held_whole:
        assert set(s for src, s in splits if src == source) == {"docs_heldout"}
    # The reference sample is the tuning split and nothing else.
    reference = {i for i, _ in load_reference(CLEAN)}
    assert reference == {r["id"] for r in rows if r["split"] == "tuning"}


def test_planted_junk_is_deterministic_and_keeps_originals_first():
    clean = keep_rate.load_clean(CLEAN, DOCS_HELDOUT)
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
    clean = keep_rate.load_clean(CLEAN, DOCS_HELDOUT)
    for split in ("heldout", "docs_heldout"):
        result = keep_rate.score_split(cfg, clean, split, seed=1234)
        assert result["clean_dropped"] <= 0.10, split
        assert result["junk_caught"] >= 0.95, split
        assert result["pii_gate_flagged"] == [], split
        assert result["near_dedup"]["recall"] >= 0.95, split
