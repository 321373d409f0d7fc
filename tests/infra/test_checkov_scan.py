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


def run_checkov(infra: Path, *args: str) -> list[dict]:
    binary = checkov_binary()
    if binary is None:
        message = "checkov is not installed: `make test` builds .venv-checkov"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI runs `make test`, which builds it: never skip there
        pytest.skip(message)
    proc = subprocess.run(
        [str(binary), "-d", str(infra), *args, "--compact"]
        + ["--skip-download", "--output", "json"],  # --skip-download: no network calls
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: failed checks, reported below
    reports = json.loads(proc.stdout)
    return reports if isinstance(reports, list) else [reports]


@pytest.fixture(scope="module")
def scan() -> list[dict]:
    return run_checkov(INFRA, "--framework", *FRAMEWORKS)


def failed_checks(scan: list[dict]) -> list[dict]:
    return [c for r in scan for c in r["results"].get("failed_checks", [])]


def test_checkov_finds_no_failed_check(scan):
    by_type = {r["check_type"]: r for r in scan}
    assert {"terraform", "dockerfile"} <= set(by_type)
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in failed_checks(scan)
    ]
    assert not failed, "\n".join(failed)
    for r in scan:
        assert r["summary"]["parsing_errors"] == 0, r["check_type"]


def test_the_scan_checked_every_file_that_declares_resources(scan):
    checked = {
        c["file_path"]
        for r in scan
        for kind in ("passed_checks", "skipped_checks")
        for c in r["results"].get(kind, [])
    }
    declaring = {
        f"/{p.relative_to(INFRA)}"
        for p in INFRA.rglob("*.tf")
        if re.search(r'^resource "', p.read_text(), re.M)
    } | {f"/{p.relative_to(INFRA)}" for p in INFRA.rglob("*Dockerfile")}
    assert declaring and declaring <= checked, sorted(declaring - checked)


@pytest.mark.slow  # a second checkov run: ~30 s on a shared CPU
def test_the_scan_fails_when_a_setting_is_made_insecure(tmp_path):
    infra = shutil.copytree(INFRA, tmp_path / "infra")
    services = infra / "terraform" / "aws" / "modules" / "services" / "main.tf"
    secure = "storage_encrypted                     = true"
    assert secure in services.read_text()
    services.write_text(services.read_text().replace(secure, secure.replace("true", "false")))
    scan = run_checkov(infra, "--framework", "terraform", "--check", "CKV_AWS_16")
    assert [(c["check_id"], c["resource"]) for c in failed_checks(scan)] == [
        ("CKV_AWS_16", "module.services.aws_db_instance.this")  # RDS encrypted at rest
    ]


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
