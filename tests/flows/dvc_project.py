"""A one-stage DVC project whose stage keeps the `llmops stage` contract (report + exit code)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from flows.dvc_stage import dvc_executable
from tests.helpers import ROOT

# `python stage.py CODE FAILING`: the first FAILING attempts exit CODE (after reporting it, as
# `llmops stage` does); later attempts succeed. Attempts are counted in a file DVC does not track.
STAGE_SCRIPT = """\
import sys
from pathlib import Path

from flows import stage_report
from flows.stage_report import StageReport

counter = Path("attempts")
attempt = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(attempt))
code = int(sys.argv[1]) if attempt <= int(sys.argv[2]) else 0
stage_report.write(StageReport("make", code, "PlantedError: first attempt" if code else ""))
if code:
    sys.exit(code)
Path("out.txt").write_text(Path("in.txt").read_text().upper())
"""


def make_project(root: Path, first_exit_code: int = 0, failing_attempts: int = 1) -> Path:
    root.mkdir(parents=True)
    (root / "stage.py").write_text(STAGE_SCRIPT)
    (root / "in.txt").write_text("a\n")
    (root / "params.yaml").write_text("seed: 1\n")
    cmd = f"python stage.py {first_exit_code} {failing_attempts}"
    stage = {"cmd": cmd, "deps": ["stage.py", "in.txt"]}
    (root / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"make": {**stage, "outs": ["out.txt"]}}})
    )
    subprocess.run([dvc_executable(), "init", "--no-scm", "-q"], cwd=root, check=True)
    return root


def attempts(root: Path) -> int:
    counter = root / "attempts"
    return int(counter.read_text()) if counter.exists() else 0


def git_project(root: Path) -> Path:
    """The one-stage project in a git repository with one commit; its stage reads `seed`."""
    root.mkdir(parents=True)
    (root / "stage.py").write_text(
        "from pathlib import Path\nimport yaml\n"
        "seed = yaml.safe_load(Path('params.yaml').read_text())['seed']\n"
        "Path('out.txt').write_text(Path('in.txt').read_text().upper() + str(seed))\n"
        "Path('m').mkdir(exist_ok=True)\n"
        "Path('m/make.json').write_text(str(seed))\n"
    )
    (root / ".gitignore").write_text("/m\n")  # as the project ignores its metrics folder
    (root / "in.txt").write_text("a\n")
    # The project's params (flows validate overrides against them); the stage reads `seed`.
    (root / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    stage = {"cmd": "python stage.py", "deps": ["stage.py", "in.txt"], "params": ["seed"]}
    (root / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "make": {
                        **stage,
                        "outs": ["out.txt"],
                        "metrics": [{"m/make.json": {"cache": False}}],
                    }
                }
            }
        )
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([dvc_executable(), "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=root, check=True)
    return root


def experiments(root: Path) -> dict[str, dict]:
    """{experiment name: its params.yaml values} of the workspace's baseline commit."""
    import json

    proc = subprocess.run(
        [dvc_executable(), "exp", "show", "--json"], cwd=root, capture_output=True, check=True
    )
    out = {}
    for baseline in json.loads(proc.stdout):
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                params = rev["data"]["params"]["params.yaml"]["data"]
                out[rev["name"]] = params
    return out
