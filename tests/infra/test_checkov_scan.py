"""checkov scans infra/ (Terraform, Dockerfiles, secrets): no failed check, every skip justified.

checkov pins packaging<24 and networkx<2.7, which the project environment cannot take
(pytest needs packaging>=24), so it lives in its own environment: `make test` builds
.venv-checkov from infra/requirements-scan.txt, or point LLMOPS_CHECKOV at a checkov binary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

INFRA = ROOT / "infra"
FRAMEWORKS = ["terraform", "dockerfile", "secrets"]
SKIP_COMMENT = re.compile(r"checkov:skip=([A-Z0-9_]+)(?::\s*(.*))?")


def checkov_binary() -> Path | None:
    if os.environ.get("LLMOPS_CHECKOV"):
        return Path(os.environ["LLMOPS_CHECKOV"])
    local = ROOT / ".venv-checkov" / "bin" / "checkov"
    if local.exists():
        return local
    found = shutil.which("checkov")
    return Path(found) if found else None


@pytest.fixture(scope="module")
def scan() -> list[dict]:
    binary = checkov_binary()
    if binary is None:
        message = "checkov is not installed: `make test` builds .venv-checkov"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI runs `make test`, which builds it: never skip there
        pytest.skip(message)
    proc = subprocess.run(
        [str(binary), "-d", str(INFRA), "--framework", *FRAMEWORKS, "--compact"]
        + ["--skip-download", "--output", "json"],  # --skip-download: no network calls
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: failed checks, reported below
    reports = json.loads(proc.stdout)
    return reports if isinstance(reports, list) else [reports]


def test_checkov_finds_no_failed_check(scan):
    by_type = {r["check_type"]: r for r in scan}
    assert {"terraform", "dockerfile"} <= set(by_type)
    assert by_type["terraform"]["summary"]["resource_count"] >= 60
    assert by_type["terraform"]["summary"]["passed"] >= 250
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for r in scan
        for c in r["results"].get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)
    for r in scan:
        assert r["summary"]["parsing_errors"] == 0, r["check_type"]


def test_every_skip_is_justified_next_to_its_resource(scan):
    skipped = [c for r in scan for c in r["results"].get("skipped_checks", [])]
    assert skipped, "the scan should see the inline skips"
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.strip()) >= 20, f"{check['check_id']} on {check['resource']}: {reason!r}"
    for path in INFRA.rglob("*"):
        if path.suffix not in {".tf", ".hcl"} and not path.name.endswith("Dockerfile"):
            continue
        for match in SKIP_COMMENT.finditer(path.read_text()):
            assert match.group(2) and len(match.group(2)) >= 20, f"{path}: {match.group(0)}"
