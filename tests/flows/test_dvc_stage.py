"""Skipped, ran, restored or failed: decided from `dvc status --json` and the stage's report."""

import pytest

from components.constants import EXIT_TRANSIENT
from flows import dvc_stage
from flows.dvc_stage import Outcome, StageFailed, run_dvc_stage
from tests.flows.dvc_project import attempts, make_project


def run(root, **kwargs) -> Outcome:
    return run_dvc_stage(root, "make", lambda line: None, **kwargs)


def test_real_status_decides_ran_skipped_and_restored(tmp_path):
    root = make_project(tmp_path / "p")
    assert dvc_stage.dvc_status(root, "make")  # never ran: stale
    assert run(root) is Outcome.RAN
    assert dvc_stage.dvc_status(root, "make") == {}
    assert run(root) is Outcome.SKIPPED
    (root / "in.txt").write_text("b\n")
    assert run(root) is Outcome.RAN
    # Back to inputs DVC has seen: it checks the outputs out of its run cache, no command runs.
    (root / "in.txt").write_text("a\n")
    assert run(root) is Outcome.RESTORED
    assert (root / "out.txt").read_text() == "A\n"
    assert attempts(root) == 2
    assert run(root, force=True) is Outcome.RAN


def test_fake_status_up_to_date_never_reaches_dvc(tmp_path, monkeypatch):
    monkeypatch.setattr(dvc_stage, "dvc_executable", lambda: str(tmp_path / "no-dvc-here"))
    assert run(tmp_path, status=lambda root, stage: {}) is Outcome.SKIPPED
    stale = {"make": [{"changed deps": {"in.txt": "modified"}}]}
    with pytest.raises(FileNotFoundError, match="no-dvc-here"):
        run(tmp_path, status=lambda root, stage: stale)  # stale: handed to dvc repro


def test_force_does_not_ask_for_status(tmp_path):
    root = make_project(tmp_path / "p")

    def status(root, stage):
        raise AssertionError("force must not depend on dvc status")

    assert run(root, force=True, status=status) is Outcome.RAN


@pytest.mark.parametrize(("code", "transient"), [(EXIT_TRANSIENT, True), (3, False)])
def test_failure_carries_the_stages_own_exit_code(tmp_path, code, transient):
    root = make_project(tmp_path / "p", first_exit_code=code)
    with pytest.raises(StageFailed) as caught:
        run(root)
    err = caught.value
    # DVC exits 255 whatever the command's code: the code comes from the stage's report.
    assert (err.exit_code, err.transient) == (code, transient)
    assert err.dvc_returncode != code
    assert "PlantedError: first attempt" in str(err)


def test_dvc_failing_before_the_command_is_not_transient(tmp_path):
    root = make_project(tmp_path / "p")
    (root / "in.txt").unlink()  # a missing dependency: DVC refuses to run the stage
    with pytest.raises(StageFailed) as caught:
        run(root)
    assert caught.value.exit_code is None and not caught.value.transient
    assert attempts(root) == 0


def test_dvc_bookkeeping_that_overruns_its_time_is_stopped_and_named(tmp_path):
    root = make_project(tmp_path / "p")
    # No dvc command finishes in 10 ms (its start-up alone is longer): the limit fires for real.
    with pytest.raises(
        dvc_stage.DvcStatusError, match=r"`dvc status make` did not finish in 0.01 s"
    ):
        dvc_stage.dvc_status(root, "make", timeout_s=0.01)
    message = dvc_stage.restore_outputs(root, "make", timeout_s=0.01)
    assert "`dvc checkout make` did not finish in 0.01 s and was stopped" in message
