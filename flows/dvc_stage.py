"""Run one DVC stage as a subprocess and report whether it ran, was skipped, or failed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
from dvc.repo import Repo

# Markers DVC prints when a stage needs no work (up to date, or restored from the run cache).
_SKIP_MARKERS = ("didn't change, skipping", "is cached - skipping run")
# Failures worth a retry: the registry/tracking server or the filesystem hiccuped.
TRANSIENT_MARKERS = (
    "Connection refused",
    "ConnectionError",
    "database is locked",
    "Temporary failure",
    "timed out",
    "503 Service Unavailable",
)


class StageFailed(RuntimeError):
    def __init__(self, stage: str, returncode: int, tail: list[str]):
        self.stage, self.returncode, self.tail = stage, returncode, tail
        super().__init__(f"stage {stage} failed with exit code {returncode}:\n" + "\n".join(tail))

    @property
    def transient(self) -> bool:
        return any(m in line for line in self.tail for m in TRANSIENT_MARKERS)


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    ran: bool


def dvc_executable() -> str:
    """The `dvc` of this environment (the flow may run without the venv on PATH)."""
    return str(Path(sys.executable).with_name("dvc"))


def stage_order(root: Path) -> list[str]:
    """Stages in an order DVC's DAG allows; independent stages keep their dvc.yaml order."""
    repo = Repo(str(root))
    try:
        position = {s.addressing: i for i, s in enumerate(repo.index.stages)}
        # DVC's edges point from a stage to the stages it depends on: reverse for run order.
        graph = repo.index.graph.reverse(copy=True)
        order = nx.lexicographical_topological_sort(graph, key=lambda s: position[s.addressing])
        return [s.addressing for s in order if s.cmd]
    finally:
        repo.close()


def upstream_closure(root: Path, targets: list[str]) -> set[str]:
    """The targets plus every stage they depend on (what `dvc repro TARGET` would consider)."""
    repo = Repo(str(root))
    try:
        graph = repo.index.graph
        by_name = {s.addressing: s for s in graph.nodes}
        unknown = sorted(set(targets) - set(by_name))
        if unknown:
            raise ValueError(f"unknown stages {unknown}; stages are {sorted(by_name)}")
        keep = set(targets)
        for t in targets:
            keep |= {s.addressing for s in nx.descendants(graph, by_name[t])}
        return keep
    finally:
        repo.close()


def run_dvc_stage(
    root: Path,
    stage: str,
    log: Callable[[str], None],
    force: bool = False,
    env: dict[str, str] | None = None,
) -> StageOutcome:
    """`dvc repro --single-item STAGE`, streaming its output lines to `log`."""
    cmd = [dvc_executable(), "repro", "--single-item", stage] + (["--force"] if force else [])
    full_env = {**os.environ, **(env or {})}
    # Progress bars redraw many times a second; the flow's log only needs a line now and then.
    full_env.setdefault("TQDM_MININTERVAL", "15")
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env.get('PATH', '')}"
    lines: list[str] = []
    with subprocess.Popen(
        cmd,
        cwd=root,
        env=full_env,
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
    if proc.returncode != 0:
        raise StageFailed(stage, proc.returncode, lines[-40:])
    skipped = any(m in line for line in lines for m in _SKIP_MARKERS)
    return StageOutcome(stage, ran=not skipped)
