"""The project root: the one directory that every path of the project resolves from.

Entry points differ in their working directory (`make`, `llmops` from a subdirectory, `dvc repro`,
a Prefect worker), so nothing resolves a project path from the working directory: it asks
`project_root()` once and passes the result down.
"""

from __future__ import annotations

import os
from pathlib import Path

from components.constants import ENV_PROJECT_DIR

# A directory holding both files is the project root.
MARKERS = ("dvc.yaml", "params.yaml")


class ProjectNotFound(RuntimeError):
    """No project root: not inside the project and LLMOPS_PROJECT_DIR not set (or wrong)."""


def is_project_root(path: Path) -> bool:
    return all((path / name).is_file() for name in MARKERS)


def project_root(explicit: str | Path | None = None) -> Path:
    """The project root: `explicit`, else $LLMOPS_PROJECT_DIR, else the nearest directory at or
    above the working directory that holds dvc.yaml and params.yaml. Absolute, resolved."""
    given, origin = explicit, "project_dir"
    if given is None and os.environ.get(ENV_PROJECT_DIR):
        given, origin = os.environ[ENV_PROJECT_DIR], ENV_PROJECT_DIR
    if given is not None:
        root = Path(given).expanduser().resolve()
        if not is_project_root(root):
            raise ProjectNotFound(
                f"{origin}={given} is not an llmops project: {root} must hold "
                f"{' and '.join(MARKERS)}"
            )
        return root
    return _walk_up(Path.cwd().resolve())


def _walk_up(start: Path) -> Path:
    for directory in (start, *start.parents):
        if is_project_root(directory):
            return directory
    raise ProjectNotFound(
        f"no llmops project at or above {start} (a directory holding {' and '.join(MARKERS)}); "
        f"run from inside the project or set {ENV_PROJECT_DIR}=/path/to/project"
    )


def dvc_paths(root: Path) -> dict[str, str]:
    """The project's paths as `dvc.yaml` names them (`vars: - p:`), relative to `root`: the
    one place paths are written, read by commands that are not stages (launch, summary)."""
    import yaml

    return yaml.safe_load((root / "dvc.yaml").read_text())["vars"][0]["p"]
