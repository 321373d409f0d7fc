import json

import pyarrow.parquet as pq
import pytest

from components.config import MixParams
from components.data import mix as mix_stage
from components.data.corpus_layout import base_id
from components.data.documents import Doc, write_docs
from components.data.mix import mix, plan_mixture, sample_group
from components.data.pack import is_validation
from components.tracking.stage_run import stage_run
from tests.helpers import project_params, stage_view


def corpus() -> list[Doc]:
    books = [Doc(f"b{i}", "x" * 1000, "books", "en") for i in range(30)]  # 30 kB
    code = [Doc(f"c{i}", "y" * 500, "code", "en") for i in range(10)]  # 5 kB
    return books + code


def byte_shares(docs: list[Doc]) -> dict[str, float]:
    total = sum(len(d.text) for d in docs)
    out: dict[str, float] = {}
    for d in docs:
        out[d.source] = out.get(d.source, 0) + len(d.text) / total
    return out


def test_weights_up_and_down_sample_to_the_requested_shares():
    cfg = MixParams(weights={"books": 0.5, "code": 0.5})
    mixed, plans = mix(corpus(), cfg, seed=0)
    assert plans["books"].epochs == pytest.approx(35 / 60)  # 17.5 kB of 30
    assert plans["code"].epochs == pytest.approx(35 / 10)  # 17.5 kB of 5: 3.5 epochs
    shares = byte_shares(mixed)
    assert shares["books"] == pytest.approx(0.5, abs=0.03)
    assert shares["code"] == pytest.approx(0.5, abs=0.03)
    code_ids = [d.id for d in mixed if d.source == "code"]
    assert len(code_ids) == len(set(code_ids)) == 35  # 3 full passes + 5 sampled
    assert {base_id(i) for i in code_ids} == {f"c{i}" for i in range(10)}


def test_empty_weights_keep_the_corpus_as_it_is():
    mixed, plans = mix(corpus(), MixParams(), seed=0)
    assert sorted(d.id for d in mixed) == sorted(d.id for d in corpus())
    assert all(p.epochs == pytest.approx(1.0) for p in plans.values())


def test_mixture_refuses_too_many_epochs_and_unknown_groups():
    with pytest.raises(ValueError, match="repeated .* times"):
        plan_mixture(
            {"a": 100, "b": 1},
            {"a": 1, "b": 1},
            MixParams(weights={"a": 0.5, "b": 0.5}, max_epochs=4),
        )
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        plan_mixture({"a": 1, "b": 1}, {"a": 1, "b": 1}, MixParams(weights={"a": 1.0}))


def test_sampling_is_seeded_and_copies_stay_on_one_side_of_the_split():
    docs = corpus()
    assert sample_group(docs, 1.5, seed=1) == sample_group(docs, 1.5, seed=1)
    assert sample_group(docs, 1.5, seed=1) != sample_group(docs, 1.5, seed=2)
    mixed, _ = mix(docs, MixParams(weights={"books": 0.5, "code": 0.5}), seed=0)
    side = {}
    for d in mixed:
        side.setdefault(base_id(d.id), set()).add(is_validation(base_id(d.id), 0.3, seed=0))
    assert all(len(s) == 1 for s in side.values())


def test_mix_stage_writes_docs_and_the_mixture_report(tmp_path):
    curated, out = tmp_path / "curated", tmp_path / "mixed"
    curated.mkdir()
    write_docs(corpus(), curated / "docs.parquet")
    params = project_params(mix={"weights": {"books": 0.75, "code": 0.25}})
    with stage_run("mix", stage_view("mix", params)) as tracker:
        result = mix_stage.run(
            tracker.params, mix_stage.Paths(curated, out, tmp_path / "m.json"), tracker
        )
    report = json.loads((out / "mixture.json").read_text())
    assert report["groups"]["code"]["requested_share"] == 0.25
    assert result.metrics["byte_share.code"] == pytest.approx(0.25, abs=0.03)
    assert pq.read_table(out / "docs.parquet").num_rows == result.metrics["docs_out"]
