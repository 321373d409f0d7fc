import json

import pandas as pd
import pytest

from components.data.documents import DOCS_FILE
from components.data.expectations import ValidationFailed
from components.data.pii import redact
from components.data.validate_curated import Paths, run
from components.tracking.stage_run import stage_run
from tests.fixtures.docstrings import DOCSTRINGS
from tests.helpers import project_params, stage_view

LEAK = (
    "who says the following line in the play about the two lovers from verona who quarrel "
    "at the feast"
)
CLEAN = "The committee will publish its annual report on the state of the rivers next spring."


@pytest.fixture
def setup(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "eval.jsonl").write_text(json.dumps({"prompt": LEAK, "answer": "x"}) + "\n")
    (tasks / "prefs_test.jsonl").write_text("")
    docs = tmp_path / "curated"
    docs.mkdir()

    def write(rows):
        pd.DataFrame(rows).to_parquet(docs / DOCS_FILE)
        return Paths(
            docs=docs,
            tasks=tasks,
            report=tmp_path / "report.json",
            docs_site=tmp_path / "site",
            metrics=tmp_path / "m.json",
        )

    return write


def row(i, text, lang="en"):
    return {"id": f"d{i}", "text": text, "source": "s", "lang": lang}


def stage(paths):
    with stage_run("validate_curated", stage_view("validate_curated", project_params())) as tracker:
        return run(tracker.params, paths, tracker)


def test_clean_table_passes_and_writes_data_docs(setup):
    paths = setup([row(1, CLEAN), row(2, CLEAN + " Again.")])
    result = stage(paths)
    assert result.metrics["success_percent"] == 100.0 and result.metrics["pii_left"] == 0
    assert (paths.docs_site / "index.html").exists()
    assert list(paths.docs_site.glob("validations/**/*.html"))


@pytest.mark.parametrize(
    "bad, failing",
    [
        (row(3, CLEAN + " Mail me at someone@postbox.de."), "pii_left"),
        (row(3, f"{CLEAN} {LEAK}"), "eval_ngrams_left"),
        (row(3, CLEAN, lang="fr"), "lang"),
        (row(1, CLEAN), r"unique\(id\)"),  # duplicate id
    ],
)
def test_each_leak_fails_the_gate_and_saves_the_result(setup, bad, failing):
    paths = setup([row(1, CLEAN), row(2, CLEAN + " Again."), bad])
    with pytest.raises(ValidationFailed, match=failing):
        stage(paths)
    assert json.loads(paths.report.read_text())["success"] is False


def test_redacted_documentation_passes_the_gate(setup):
    # Real docstrings (decorators, documentation addresses, slices, doctest output) and one
    # that holds an address, as the refinery's redactor leaves them.
    texts = [*DOCSTRINGS.values(), "Report bugs to guido@python.org or (212) 555-2590."]
    paths = setup([row(i, f"{CLEAN}\n{redact(t)[0]}") for i, t in enumerate(texts)])
    assert stage(paths).metrics["pii_left"] == 0
