"""One run at a time: the run lock refuses a second run before it touches params.yaml, lets the
stages of the holding run through, is released by a killed holder, and the next run cleans up
after a killed one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from components.constants import ENV_PROJECT_DIR, ENV_RUN_TOKEN, EXIT_TRANSIENT, RUN_TAG_TOKEN
from flows import run_lock
from flows.recovery import recover
from flows.run_lock import OrphanedStages, RunLocked
from tests.helpers import ROOT

# Holds the lock like `llmops run` does (backing params.yaml up first), then sleeps; with
# argv[2] == "child" it first starts a child in its process group, as `dvc repro` would be.
HOLDER = """\
import subprocess, sys, time
from pathlib import Path
from flows import run_lock
root = Path(sys.argv[1])
with run_lock.hold(root, "llmops run --set align.lr=0.0001"):
    run_lock.backup_params(root, root / "params.yaml")
    (root / "params.yaml").write_text((root / "params.yaml").read_text() + "# override\\n")
    if sys.argv[2] == "child":
        subprocess.Popen(["sleep", "60"])
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "project"
    root.mkdir()
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, root / name)
    monkeypatch.setenv(ENV_PROJECT_DIR, str(root))
    monkeypatch.delenv(ENV_RUN_TOKEN, raising=False)
    return root


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_RUN_TOKEN}
    return {**env, "PYTHONPATH": str(ROOT), ENV_PROJECT_DIR: str(root)}


def _start_holder(root: Path, child: bool = False, seconds: float = 60) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), "child" if child else "-", str(seconds)],
        env=_env(root),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a command started from a shell
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def _kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_second_run_is_refused_before_touching_params(project):
    holder = _start_holder(project)
    try:
        params_before = (project / "params.yaml").read_text()
        with (
            pytest.raises(RunLocked, match=f"align.lr=0.0001.*pid {holder.pid}"),
            run_lock.hold(project, "second"),
        ):
            pass
        # `llmops params set` is refused too, exit 75, naming the run in progress.
        proc = subprocess.run(
            [sys.executable, "-m", "flows.cli", "params", "set", "align.lr=0.5"],
            env=_env(project),
            capture_output=True,
            text=True,
        )
        assert proc.returncode == EXIT_TRANSIENT, proc.stderr
        assert f"pid {holder.pid}" in proc.stderr and "Traceback" not in proc.stderr
        assert (project / "params.yaml").read_text() == params_before
    finally:
        _kill9(holder)


def test_stages_of_the_holding_run_pass_and_others_wait(project):
    with run_lock.hold(project, "llmops run") as (holder, _):
        assert os.environ[ENV_RUN_TOKEN] == holder.token
        with run_lock.hold(project, "llmops stage sft", flow_run_id="abc") as (inner, previous):
            assert inner.token == holder.token and previous is None
        assert run_lock.read_holder(project).flow_run_id == "abc"
        # A stage subprocess started by this run (it inherits the token) is let through.
        code = "from pathlib import Path; import sys; from flows import run_lock\n"
        code += "with run_lock.hold(Path(sys.argv[1]), 'stage'): print('ok')"
        env = {**_env(project), ENV_RUN_TOKEN: holder.token}
        out = subprocess.run(
            [sys.executable, "-c", code, str(project)], env=env, text=True, capture_output=True
        )
        assert out.stdout.strip() == "ok", out.stderr
    assert run_lock.read_holder(project).finished
    assert ENV_RUN_TOKEN not in os.environ


def test_wait_blocks_until_the_holder_is_done(project):
    holder = _start_holder(project, seconds=1.5)
    start = time.monotonic()
    with run_lock.hold(project, "waiter", wait=True) as (mine, previous):
        assert time.monotonic() - start > 0.5
        assert previous is None  # the first run finished cleanly
    holder.wait()


def test_a_killed_run_releases_the_lock_and_is_cleaned_up_by_the_next(project):
    holder = _start_holder(project)
    dead = run_lock.read_holder(project)
    mlflow.set_experiment("llmops")
    run = MlflowClient().create_run(
        mlflow.get_experiment_by_name("llmops").experiment_id, tags={RUN_TAG_TOKEN: dead.token}
    )
    _kill9(holder)
    with run_lock.hold(project, "next") as (_, previous):
        assert previous.pid == holder.pid and not previous.finished
        done = recover(project, previous)
    assert "# override" not in (project / "params.yaml").read_text()  # its params undone
    assert MlflowClient().get_run(run.info.run_id).info.status == "FAILED"
    assert any("RUNNING -> FAILED" in line for line in done)


def test_stage_processes_of_a_killed_run_block_the_next(project):
    holder = _start_holder(project, child=True)
    _kill9(holder)  # kill -9 reaches the run, not the `dvc repro` it started
    try:
        with (
            pytest.raises(OrphanedStages, match=f"kill -- -{holder.pid}"),
            run_lock.hold(project, "next"),
        ):
            pass
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
    time.sleep(0.2)
    with run_lock.hold(project, "next"):
        pass


# Two stages of a user's plain `dvc repro`, each taking the lock like `llmops stage` does. The
# second waits for a "go" file before touching the lock: the repro is then between stages.
REPRO_STAGE = """\
import sys, time
from pathlib import Path
from flows import run_lock
name = sys.argv[1]
if name == "second":
    Path("second-started").touch()
    while not Path("go").exists():
        time.sleep(0.05)
with run_lock.hold_stage(Path.cwd(), "llmops stage " + name) as (holder, previous):
    Path(name + ".txt").write_text(holder.token)
"""


def _repro_project(root: Path) -> None:
    import yaml

    from flows.dvc_stage import dvc_executable

    (root / "stage.py").write_text(REPRO_STAGE)
    stages = {
        "first": {"cmd": "python stage.py first", "deps": ["stage.py"], "outs": ["first.txt"]},
        "second": {"cmd": "python stage.py second", "deps": ["first.txt"], "outs": ["second.txt"]},
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    subprocess.run([dvc_executable(), "init", "--no-scm", "-q"], cwd=root, check=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_a_plain_dvc_repro_holds_the_lock_between_its_stages(project):
    from flows.dvc_stage import dvc_executable

    _repro_project(project)
    env = {**_env(project), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    repro = subprocess.Popen(
        [dvc_executable(), "repro"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(project / "second-started", repro)
        assert (project / "first.txt").exists()  # the first stage is done, the second not begun
        with (
            pytest.raises(RunLocked, match=f"`dvc repro` \\(pid {repro.pid} "),
            run_lock.hold(project, "llmops run --set align.lr=0.0001"),
        ):
            pass
        (project / "go").touch()
        assert repro.wait(timeout=60) == 0, repro.stdout.read()
    finally:
        repro.kill()
    # Both stages ran inside one lock: the repro's.
    assert (project / "first.txt").read_text() == (project / "second.txt").read_text()
    deadline = time.monotonic() + 10
    while not run_lock.read_holder(project).finished:  # the keeper notices dvc has exited
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with run_lock.hold(project, "next") as (_, previous):
        assert previous is None  # the repro finished cleanly: nothing to recover


def test_dvc_repro_is_recognised_from_its_command_line():
    assert run_lock.is_dvc_repro(["/venv/bin/python", "/venv/bin/dvc", "repro", "-s", "sft"])
    assert run_lock.is_dvc_repro(["dvc", "-v", "exp", "run", "--set-param", "a=1"])
    assert not run_lock.is_dvc_repro(["dvc", "status", "--json"])
    assert not run_lock.is_dvc_repro(["/bin/sh", "-c", "python stage.py repro"])
