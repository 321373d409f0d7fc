"""The curation bench's table of compared blocks stays in step with the refinery and DataTrove."""

import inspect

import pytest

from bench.curation import blocks, compare, ours
from tests.helpers import project_params


def test_table_lists_every_block_the_refinery_builds():
    cfg = project_params().curate
    table = [b.name for b in blocks.BLOCKS if b.enabled(cfg)]
    # quality_model and pii run in the refinery's polish pass, outside its filter lists.
    assert sorted(table) == sorted([*ours.filter_names(cfg), "quality_model", "pii"])


def test_disabled_blocks_leave_the_comparison():
    cfg = project_params(curate={"languages": (), "redact_pii": False}).curate
    assert "language_id" not in blocks.common_names(cfg)
    assert "pii" not in blocks.common_names(cfg)


def test_every_mapped_param_exists_and_null_maps_to_off():
    cfg = project_params(curate={"c4_line_min_words": None}).curate
    for b in blocks.BLOCKS:
        for a in b.args:
            a.ours_value(cfg)  # raises on a param the schema does not have
    c4 = next(b for b in blocks.BLOCKS if b.name == "c4_quality")
    assert blocks.kwargs(c4, cfg)["min_words_per_line"] == -1


def test_datatrove_classes_take_the_mapped_arguments():
    pytest.importorskip("datatrove")
    from bench.curation import datatrove_side

    cfg = project_params().curate
    for b in blocks.compared(cfg):
        params = inspect.signature(datatrove_side.load(b.theirs)).parameters
        names = [a.theirs for a in b.args] + list(b.theirs_only)
        assert set(names) <= set(params), b.name
    assert blocks.mapping(cfg)["gopher_quality"]["min_words"] == f"min_doc_words={cfg.min_words}"


def test_compare_ignores_timings_and_ratios():
    result = {
        "ours": {"blocks": {"pii": {"docs_in": 3, "docs_changed": 1, "cpu_seconds": 0.2}}},
        "ratios": {"pii": 0.4},
    }
    assert dict(compare.decisions(result)) == {
        "ours.blocks.pii.docs_in": 3,
        "ours.blocks.pii.docs_changed": 1,
    }
