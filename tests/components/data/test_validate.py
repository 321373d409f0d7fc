import json

import pandas as pd
import pytest

from components.data import expectations, validate
from components.tracking.stage_run import stage_run
from tests.helpers import project_params, stage_view


def frame(**overrides):
    data = {
        "id": ["a", "b"],
        "text": ["some text", "more text"],
        "source": ["shakespeare", "pydocs"],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def test_suite_passes_good_docs():
    result = expectations.validate_frame(frame(), validate.raw_docs_suite(project_params()))
    assert result["success"]


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"id": ["a", "a"]}, "expect_column_values_to_be_unique(id)"),
        ({"source": ["shakespeare", "spam"]}, "expect_column_values_to_be_in_set(source)"),
        ({"text": ["", "ok"]}, "expect_column_value_lengths_to_be_between(text)"),
    ],
)
def test_suite_names_the_failed_expectation(bad, expected):
    result = expectations.validate_frame(frame(**bad), validate.raw_docs_suite(project_params()))
    assert not result["success"]
    assert expectations.failed_expectations(result) == [expected]


def test_failing_gate_raises_after_saving_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "docs").mkdir()
    frame(id=["a", "a"]).to_parquet(tmp_path / "docs" / "docs.parquet")
    paths = validate.Paths(
        docs=tmp_path / "docs",
        report=tmp_path / "report.json",
        docs_site=tmp_path / "site",
        metrics=tmp_path / "m.json",
    )
    params = project_params()
    with (
        pytest.raises(expectations.ValidationFailed, match="unique"),
        stage_run("validate_raw", stage_view("validate_raw", params)) as tracker,
    ):
        validate.run(tracker.params, paths, tracker)
    assert json.loads(paths.report.read_text())["success"] is False
    # Data Docs HTML for people to read, next to the JSON result.
    assert (paths.docs_site / "index.html").exists()


def test_two_gate_runs_write_identical_reports(tmp_path, monkeypatch):
    # The report is a DVC dependency of curate: run ids or timestamps in it would re-run
    # curation after every gate run on unchanged data.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "docs").mkdir()
    frame().to_parquet(tmp_path / "docs" / "docs.parquet")
    reports = []
    for i in range(2):
        paths = validate.Paths(
            docs=tmp_path / "docs",
            report=tmp_path / f"report{i}.json",
            docs_site=tmp_path / f"site{i}",
            metrics=tmp_path / f"m{i}.json",
        )
        with stage_run("validate_raw", stage_view("validate_raw", project_params())) as tracker:
            validate.run(tracker.params, paths, tracker)
        reports.append(paths.report.read_bytes())
    assert reports[0] == reports[1]
    assert json.loads(reports[0])["success"] is True
