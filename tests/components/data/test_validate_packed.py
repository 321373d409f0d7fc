import json

import numpy as np
import pytest

from components.data import validate_packed as stage
from components.data.expectations import ValidationFailed
from components.tracking.stage_run import stage_run
from tests.helpers import project_params, stage_view

SEQ = 16


def packed(tmp_path, vocab=100, realised=None, train_rows=40):
    data = tmp_path / "packed"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(data / "train.npy", rng.integers(0, vocab, (train_rows, SEQ)).astype(np.uint16))
    np.save(data / "val.npy", rng.integers(0, vocab, (3, SEQ)).astype(np.uint16))
    index = {
        "vocab_size": 100,
        "requested_share": {"books": 0.6, "code": 0.4},
        "train_token_share": realised or {"books": 0.62, "code": 0.38},
    }
    (data / "index.json").write_text(json.dumps(index))
    return stage.Paths(data, tmp_path / "report.json", tmp_path / "docs", tmp_path / "m.json")


def run(paths, **gate):
    params = project_params(
        pack={"seq_len": SEQ}, validate_packed={"min_train_tokens": 100, **gate}
    )
    with stage_run("validate_packed", stage_view("validate_packed", params)) as tracker:
        return stage.run(tracker.params, paths, tracker)


def test_gate_passes_and_writes_data_docs_for_both_suites(tmp_path):
    result = run(packed(tmp_path))
    assert result.metrics["train_tokens"] == 40 * SEQ
    assert result.metrics["max_share_error"] == pytest.approx(0.02)
    for suite in ("packed_sequences", "mixture"):
        assert list((tmp_path / "docs" / suite).rglob("index.html"))


def test_gate_stops_on_out_of_vocabulary_ids(tmp_path):
    with pytest.raises(ValidationFailed, match="max_id"):
        run(packed(tmp_path, vocab=300))


def test_gate_stops_when_the_mixture_drifts_from_the_request(tmp_path):
    with pytest.raises(ValidationFailed, match="share_error"):
        run(packed(tmp_path, realised={"books": 0.8, "code": 0.2}))


def test_gate_stops_on_too_few_or_too_many_tokens(tmp_path):
    with pytest.raises(ValidationFailed, match="train_tokens"):
        run(packed(tmp_path, train_rows=4))
    with pytest.raises(ValidationFailed, match="train_tokens"):
        run(packed(tmp_path / "b", train_rows=40), max_train_tokens=320)
