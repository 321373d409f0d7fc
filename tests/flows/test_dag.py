from components.stage import STAGE_NAMES
from flows.dvc_stage import stage_order, upstream_closure
from tests.helpers import ROOT


def test_dvc_dag_declares_every_stage_of_the_package_in_a_valid_order():
    order = stage_order(ROOT)
    assert sorted(order) == sorted(STAGE_NAMES)
    pos = {s: i for i, s in enumerate(order)}
    for before, after in [
        ("tasks", "curate"),
        ("tasks", "sft"),
        ("ingest", "validate_raw"),
        ("validate_raw", "curate"),
        ("curate", "validate_curated"),
        ("validate_curated", "mix"),
        ("mix", "tokenizer"),
        ("checkpoint", "tokenizer"),
        ("checkpoint", "pretrain"),
        ("tokenizer", "pack"),
        ("pack", "validate_packed"),
        ("validate_packed", "pretrain"),
        ("pretrain", "sft"),
        ("sft", "align"),
        ("align", "quantize"),
        ("quantize", "evaluate"),
        ("evaluate", "promote"),
        ("promote", "deploy"),
        ("align", "judge"),
        ("reward", "judge"),
        ("judge", "promote"),
        ("curate", "safety"),
        ("safety", "promote"),
        ("promote", "report"),
        ("evaluate", "report"),
    ]:
        assert pos[before] < pos[after]


def test_stage_names_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sorted(stage_order(ROOT)) == sorted(STAGE_NAMES)
    assert "ingest" in upstream_closure(ROOT, ["validate_raw"])


def test_upstream_closure_includes_dependencies_only():
    closure = upstream_closure(ROOT, ["pack"])
    assert closure == {
        "tasks",
        "ingest",
        "validate_raw",
        "curate",
        "validate_curated",
        "mix",
        "checkpoint",
        "tokenizer",
        "pack",
    }
