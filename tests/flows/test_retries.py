"""The Prefect task retries a stage that exited EXIT_TRANSIENT, and nothing else.

Real Prefect (its test harness), real `dvc repro`, a one-stage project whose first attempts
exit with the given code.
"""

import pytest
from prefect import flow
from prefect.states import Completed, Failed

from components.constants import EXIT_TRANSIENT
from flows.dvc_stage import StageFailed
from flows.pipeline import dvc_stage, retry_if_transient
from flows.stage_report import StageReport
from tests.flows.dvc_project import attempts, make_project


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@flow
def one_stage(root: str) -> tuple[str, int | None]:
    """The stage's final state and, if it failed, the exit code it failed with."""
    task = dvc_stage.with_options(retry_delay_seconds=0)
    state = task("make", root, "no-parent-run", return_state=True)
    err = state.result(raise_on_failure=False)
    return state.type.value, err.exit_code if isinstance(err, StageFailed) else None


def failed_with(code: int | None):
    report = StageReport("make", code) if code is not None else None
    return Failed(data=StageFailed("make", 255, report, []))


@pytest.mark.parametrize(
    ("state", "retry"),
    [
        (failed_with(EXIT_TRANSIENT), True),
        (failed_with(1), False),
        (failed_with(None), False),  # DVC failed before the command: not the stage's verdict
        (Failed(data=ValueError("bad params")), False),
        (Completed(), False),
    ],
)
def test_retry_condition_reads_only_the_exit_code(state, retry):
    assert retry_if_transient(None, None, state) is retry


def test_transient_exits_are_retried_until_the_stage_succeeds(prefect_api, tmp_path):
    root = make_project(tmp_path / "p", first_exit_code=EXIT_TRANSIENT, failing_attempts=2)
    assert one_stage(str(root)) == ("COMPLETED", None)
    assert attempts(root) == 3  # two injected transient failures, then the success
    assert (root / "out.txt").read_text() == "A\n"


def test_a_stage_that_stays_transient_fails_after_the_declared_retries(prefect_api, tmp_path):
    root = make_project(tmp_path / "p", first_exit_code=EXIT_TRANSIENT, failing_attempts=9)
    assert one_stage(str(root)) == ("FAILED", EXIT_TRANSIENT)
    assert attempts(root) == 1 + dvc_stage.retries  # the policy on the task, not a loop


def test_other_failures_are_not_retried(prefect_api, tmp_path):
    root = make_project(tmp_path / "p", first_exit_code=1)
    assert one_stage(str(root)) == ("FAILED", 1)
    assert attempts(root) == 1
