"""Run one DVC stage as a subprocess: skipped, ran, restored from DVC's run cache, or failed.

Every decision comes from a contract, never from the text the tools print:
- up to date: `dvc status --json STAGE` reports nothing for the stage;
- ran or restored: whether `llmops stage` wrote its report (flows/stage_report.py) — when DVC
  restores a stale stage's outputs from its run cache, the command does not run;
- transient failure: the exit code in the stage's report is EXIT_TRANSIENT (`dvc repro` itself
  exits 255 whatever the command's code was).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

import networkx as nx
from dvc.dvcfile import PROJECT_FILE
from dvc.repo import Repo
from dvc.stage import PipelineStage, Stage

from components.constants import ENV_PROJECT_DIR, ENV_STAGE_REPORT, EXIT_TRANSIENT
from flows import stage_report
from flows.stage_report import StageReport


class Outcome(StrEnum):
    RAN = "ran"  # the stage's command ran and succeeded
    RESTORED = "restored"  # stale, and DVC checked its outputs out of the run cache
    SKIPPED = "skipped"  # up to date: nothing to do


class StageFailed(RuntimeError):
    def __init__(
        self,
        stage: str,
        dvc_returncode: int,
        report: StageReport | None,
        tail: list[str],
        restored: str = "",
    ):
        self.stage = stage
        self.dvc_returncode = dvc_returncode
        self.report = report
        self.tail = tail
        # None: the command never reported (DVC failed around it, or it died before reporting).
        self.exit_code = report.exit_code if report else None
        what = (
            f"exited with code {self.exit_code} ({report.error})"
            if report
            else f"reported no exit code (dvc repro exited with code {dvc_returncode})"
        )
        restored = f"\n{restored}" if restored else ""
        super().__init__(f"stage {stage} {what}:\n" + "\n".join(tail) + restored)

    @property
    def transient(self) -> bool:
        return self.exit_code == EXIT_TRANSIENT


# How long DVC's bookkeeping commands may take before they are killed and named. Both hash or
# link a stage's deps and outs: seconds for the demo, minutes for a large dataset or model on a
# slow disk; hours means a stuck lock or file system, which a flow must not wait on forever.
# `dvc repro` itself runs the stage's work and has no limit here.
DVC_STATUS_TIMEOUT_S = 900
DVC_CHECKOUT_TIMEOUT_S = 1800


class UnknownStages(ValueError):
    """Stage names that dvc.yaml does not define."""


class DvcStatusError(RuntimeError):
    """`dvc status` itself failed, so whether the stage is up to date is unknown."""


def dvc_executable() -> str:
    """The `dvc` of this environment (the flow may run without the venv on PATH)."""
    return str(Path(sys.executable).with_name("dvc"))


def address(stage: Stage) -> str:
    """How `dvc repro`/`dvc status` run from the project root name the stage.

    DVC's own `Stage.addressing` is relative to the working directory, which is not the root.
    """
    if not isinstance(stage, PipelineStage):
        return stage.path_in_repo  # a .dvc file
    if stage.path_in_repo == PROJECT_FILE:
        return stage.name
    return f"{stage.path_in_repo}:{stage.name}"


def stage_order(root: Path) -> list[str]:
    """Stages in an order DVC's DAG allows; independent stages keep their dvc.yaml order."""
    repo = Repo(str(root))
    try:
        position = {address(s): i for i, s in enumerate(repo.index.stages)}
        # DVC's edges point from a stage to the stages it depends on: reverse for run order.
        graph = repo.index.graph.reverse(copy=True)
        order = nx.lexicographical_topological_sort(graph, key=lambda s: position[address(s)])
        return [address(s) for s in order if s.cmd]
    finally:
        repo.close()


def upstream_closure(root: Path, targets: list[str]) -> set[str]:
    """The targets plus every stage they depend on (what `dvc repro TARGET` would consider)."""
    repo = Repo(str(root))
    try:
        graph = repo.index.graph
        by_name = {address(s): s for s in graph.nodes}
        unknown = sorted(set(targets) - set(by_name))
        if unknown:
            raise UnknownStages(f"unknown stages {unknown}; stages are {sorted(by_name)}")
        keep = set(targets)
        for t in targets:
            keep |= {address(s) for s in nx.descendants(graph, by_name[t])}
        return keep
    finally:
        repo.close()


def _subprocess_env(root: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra, ENV_PROJECT_DIR: str(root)}
    # The stage runs the `llmops` and `dvc` of this environment, on PATH or not.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def dvc_status(
    root: Path,
    stage: str,
    env: dict[str, str] | None = None,
    timeout_s: float = DVC_STATUS_TIMEOUT_S,
) -> dict:
    """`dvc status --json STAGE`: what changed in the stage itself ({} when up to date)."""
    try:
        proc = subprocess.run(
            [dvc_executable(), "status", "--json", stage],
            cwd=root,
            env=_subprocess_env(root, env or {}),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as err:
        raise DvcStatusError(
            f"`dvc status {stage}` did not finish in {timeout_s:g} s and was stopped: look for a "
            f"stuck DVC lock (.dvc/tmp/lock, rwlock) or a slow file system under {root}, then "
            "run the flow again"
        ) from err
    if proc.returncode != 0:
        raise DvcStatusError(
            f"dvc status {stage} exited with code {proc.returncode}: {proc.stderr.strip()[-2000:]}"
        )
    return json.loads(proc.stdout)


def _stream(cmd: list[str], root: Path, env: dict[str, str], log: Callable[[str], None]):
    """Run `cmd`, passing its output lines to `log`; returns (exit code, last 40 lines)."""
    lines: list[str] = []
    with subprocess.Popen(
        cmd,
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            for line in raw.rstrip("\n").split("\r"):
                if line.strip():
                    lines.append(line)
                    log(line)
    return proc.returncode, lines[-40:]


def run_dvc_stage(
    root: Path,
    stage: str,
    log: Callable[[str], None],
    force: bool = False,
    env: dict[str, str] | None = None,
    status: Callable[[Path, str], dict] = dvc_status,
) -> Outcome:
    """Bring one stage up to date with `dvc repro --single-item STAGE` (output lines to `log`).

    An up-to-date stage (per `status`) is not handed to DVC at all; `force` re-runs it anyway.
    """
    if not force and not status(root, stage):
        return Outcome.SKIPPED
    cmd = [dvc_executable(), "repro", "--single-item", stage] + (["--force"] if force else [])
    with tempfile.TemporaryDirectory(prefix="llmops-stage-") as tmp:
        report_file = Path(tmp) / "report.json"
        # Progress bars redraw many times a second; the flow's log only needs a line now and then.
        extra = {"TQDM_MININTERVAL": "15", **(env or {}), ENV_STAGE_REPORT: str(report_file)}
        returncode, tail = _stream(cmd, root, _subprocess_env(root, extra), log)
        report = stage_report.read(report_file)
    if returncode != 0:
        raise StageFailed(stage, returncode, report, tail, restore_outputs(root, stage))
    return Outcome.RAN if report else Outcome.RESTORED


def restore_outputs(root: Path, stage: str, timeout_s: float = DVC_CHECKOUT_TIMEOUT_S) -> str:
    """Put back the outputs dvc.lock records for `stage` after its command failed.

    `dvc repro` deletes a stage's cached outputs before running its command (so a stage never
    sees its old outputs), and leaves nothing when the command fails; DVC's cache still holds
    the previous ones, and `dvc checkout STAGE` links them back. Outputs with `cache: false`
    (metrics, reports) have no copy and stay as the failed run left them. Returns a sentence
    for the failure message.
    """
    try:
        proc = subprocess.run(
            [dvc_executable(), "checkout", "--quiet", stage],
            cwd=root,
            env=_subprocess_env(root, {}),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return (
            f"restoring its previous outputs with `dvc checkout {stage}` did not finish in "
            f"{timeout_s:g} s and was stopped; run it by hand from {root}"
        )
    if proc.returncode == 0:
        return (
            f"its previous outputs (as dvc.lock records them) were restored from DVC's cache "
            f"(`dvc checkout {stage}`); dvc.lock is unchanged, so the stage is still stale"
        )
    return (
        f"restoring its previous outputs with `dvc checkout {stage}` failed "
        f"(exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
    )
