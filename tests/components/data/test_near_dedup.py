from itertools import combinations

import pytest

from components.config import CurateParams
from components.data.documents import Doc
from components.data.near_dedup import (
    NEAR_DUPLICATE,
    MinHashSigner,
    NearDedupConfig,
    NearDedupFilter,
    candidate_pairs,
    jaccard,
    lean_signature,
    shingles,
)
from components.data.refinery import refine
from tests.fixtures.planted import planted_corpus
from tests.helpers import TOY_CURATE, project_params

TEXT = " ".join(f"word{i % 97} token{i % 13} item{i}" for i in range(120))


def test_shingles_ignore_case_and_punctuation():
    assert shingles("The cat, sat. ON the mat!", 3) == shingles("the cat sat on the mat", 3)
    assert jaccard(shingles(TEXT, 5), shingles(TEXT.upper(), 5)) == 1.0


def test_near_copy_dropped_with_cluster_id_different_doc_kept():
    f = NearDedupFilter(NearDedupConfig())
    edited = TEXT.replace("item7 ", "item7x ", 1)  # one edited word
    other = " ".join(f"other{i} thing{i % 7}" for i in range(200))
    assert f.filter(Doc("a", TEXT, "s")) is True
    ok, reason, detail = f.filter(Doc("b", edited, "s"))
    assert (ok, reason) == (False, NEAR_DUPLICATE) and detail.startswith("cluster a (jaccard 0.9")
    assert f.filter(Doc("c", other, "s")) is True


def test_signatures_shipped_by_the_signer_decide_as_computed_ones():
    cfg = NearDedupConfig()
    docs = [Doc("a", TEXT, "s"), Doc("b", TEXT.replace("item7 ", "item7x ", 1), "s")]
    signed = MinHashSigner(cfg).run(docs)
    assert signed.kept == docs and signed.signatures["a"] == lean_signature(TEXT, cfg)
    shipped, computed = NearDedupFilter(cfg, signed.signatures), NearDedupFilter(cfg)
    assert [shipped.filter(d) for d in docs] == [computed.filter(d) for d in docs]


def test_below_threshold_is_kept():
    words = TEXT.split()
    half = " ".join(words[: len(words) // 2] + [f"new{i}" for i in range(len(words) // 2)])
    f = NearDedupFilter(NearDedupConfig(threshold=0.8))
    f.filter(Doc("a", TEXT, "s"))
    assert jaccard(shingles(TEXT, 5), shingles(half, 5)) < 0.8
    assert f.filter(Doc("b", half, "s")) is True


def test_lsh_recall_and_precision_on_planted_duplicates():
    """Against brute-force Jaccard over all pairs (the bench does this at a larger size)."""
    docs = planted_corpus(40, variants_per_base=2, seed=3)
    cfg = NearDedupConfig()
    sets = [shingles(d.text, cfg.ngram) for d in docs]
    truth = {
        (i, j)
        for i, j in combinations(range(len(docs)), 2)
        if jaccard(sets[i], sets[j]) >= cfg.threshold
    }
    found = candidate_pairs(docs, cfg)
    assert len(truth) > 30  # the corpus really has near-duplicates around the threshold
    assert found <= truth  # confirmed on exact Jaccard: no false positives
    assert len(found) / len(truth) >= 0.95


def test_refinery_counts_near_duplicates_and_can_disable_them():
    docs = [Doc("a", TEXT, "s"), Doc("b", TEXT.replace("item7 ", "item7x ", 1), "s")]
    toy = {**TOY_CURATE, "min_words": 1, "min_alpha_ratio": None, "quality_model_keep": None}
    cfg = project_params(curate=toy).curate
    kept, rejected, stats = refine(docs, cfg, {})
    assert [d.id for d in kept] == ["a"] and stats[f"dropped.{NEAR_DUPLICATE}"] == 1
    assert rejected[0].detail.startswith("cluster a")
    off = cfg.model_copy(
        update={"near_dedup": cfg.near_dedup.model_copy(update={"enabled": False})}
    )
    kept, _, stats = refine(docs, off, {})
    assert len(kept) == 2 and f"dropped.{NEAR_DUPLICATE}" not in stats


def test_bad_near_dedup_params_rejected():
    with pytest.raises(ValueError, match="threshold"):
        CurateParams.model_validate(
            {**project_params().curate.model_dump(), "near_dedup": {"threshold": 1.5}}
        )
