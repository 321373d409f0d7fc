"""What `llmops stage` tells the flow about its run, through a file rather than printed text.

`dvc repro` replaces a failed command's exit code with its own (255), so the stage's exit code
cannot reach the flow through DVC. The flow names a file in $LLMOPS_STAGE_REPORT; the stage writes
its exit code there when it finishes. No file after a successful `dvc repro` means the command
never ran: DVC restored the outputs from its run cache.

Kept free of heavy imports: `llmops stage` imports it on every run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from components.constants import ENV_STAGE_REPORT


@dataclass(frozen=True)
class StageReport:
    stage: str
    exit_code: int
    error: str = ""  # exception type and message of a failure, for the flow's log


def write(report: StageReport) -> None:
    """Record the stage's outcome where the flow asked for it (nowhere outside a flow)."""
    target = os.environ.get(ENV_STAGE_REPORT)
    if target:
        Path(target).write_text(json.dumps(asdict(report)) + "\n")


def read(path: Path) -> StageReport | None:
    """The report the stage wrote, or None when its command did not run."""
    if not path.exists():
        return None
    return StageReport(**json.loads(path.read_text()))
