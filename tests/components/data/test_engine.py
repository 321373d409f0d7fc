"""The refinery on a 2-worker Dask cluster gives exactly what the in-process run gives."""

from dataclasses import asdict

import pytest

from components.config import EngineParams
from components.constants import EVAL_SET_FILES
from components.data.curate import split_long
from components.data.decontam import load_eval_sets
from components.data.documents import Doc
from components.data.engine import InProcessEngine, open_engine, partitions
from components.data.ingest import ingest
from components.data.quality_model import load_reference
from components.data.refinery import refine
from tests.helpers import ROOT, project_params


def square(x: int) -> int:
    return x * x


def test_partitions_cover_items_in_order():
    parts = partitions(list(range(7)), 3)
    assert parts == [[0, 1, 2], [3, 4, 5], [6]]


@pytest.fixture(scope="module")
def corpus(tasks_dir) -> tuple[list[Doc], dict[str, list[str]]]:
    """The bundled raw corpus, ingested and chunked as the curate stage does."""
    params = project_params()
    docs, _ = ingest(ROOT / "data" / "raw", params.ingest.sources, params.ingest.unicode_form)
    chunks = [c for d in docs for c in split_long(d, params.curate.max_chars_per_doc)]
    return chunks, load_eval_sets([tasks_dir / name for name in EVAL_SET_FILES])


def test_dask_engine_keeps_partition_order():
    with open_engine(EngineParams(kind="dask", workers=2)) as engine:
        assert engine.workers == 2
        assert engine.map(square, list(range(20)), "test") == [x * x for x in range(20)]


def test_refinery_on_two_dask_workers_matches_the_in_process_run(corpus):
    chunks, eval_sets = corpus
    # Small partitions: duplicates and near-duplicates fall into different partitions.
    cfg = project_params(curate={"engine": EngineParams(docs_per_partition=40)}).curate
    reference = load_reference(ROOT / "data" / "keeprate" / "clean.jsonl")
    local = refine(chunks, cfg, eval_sets, seed=1, engine=InProcessEngine(), reference=reference)
    with open_engine(cfg.engine.model_copy(update={"kind": "dask", "workers": 2})) as engine:
        distributed = refine(chunks, cfg, eval_sets, seed=1, engine=engine, reference=reference)
    (kept, rejected, stats), (d_kept, d_rejected, d_stats) = local, distributed
    assert [asdict(d) for d in d_kept] == [asdict(d) for d in kept]
    assert [asdict(r) for r in d_rejected] == [asdict(r) for r in rejected]
    assert d_stats == stats
    # The comparison means something only if every kind of block acted on this corpus.
    for reason in (
        "exact_duplicate",
        "near_duplicate",
        "gopher_too_few_words",
        "quality_model_low_score",
        "eval_contamination",
    ):
        assert stats.get(f"dropped.{reason}", 0) > 0, reason
    assert stats["pii.EMAIL"] > 0 and len(kept) > 100
    # Each source went through its rule set's chain (params.yaml curate.source_rule_set).
    assert {r.rule_set for r in rejected if r.reason == "gopher_too_few_words"} == {"structured"}
