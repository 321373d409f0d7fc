"""One declaration per fact: what a stage reads decides its params, deps and lineage hash."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from components.config import StageParams, params_hash
from components.stage import STAGE_NAMES, stage_reads
from flows.dag import drift, import_closure, stage_imports
from flows.dvc_stage import dvc_executable
from tests.helpers import ROOT, project_params


def test_dvc_yaml_params_and_code_deps_are_what_the_stages_declare():
    found = drift(ROOT)
    assert found.errors == []
    assert found.differences == [], "run `llmops dag --write`:\n" + "\n".join(found.differences)


def test_every_stage_declares_sections_of_params_yaml():
    for name in STAGE_NAMES:
        reads = stage_reads(name)
        assert issubclass(reads, StageParams) and reads.sections(), name


def test_a_stage_cannot_read_a_section_it_did_not_declare():
    view = stage_reads("sft").narrow(project_params())
    assert view.sft.lr > 0
    with pytest.raises(AttributeError, match="without declaring it: add `deploy`"):
        _ = view.deploy
    with pytest.raises(Exception, match="frozen"):
        view.seed = 1


def test_params_hash_covers_only_the_declared_sections():
    base = project_params()
    sft = stage_reads("sft")
    same = project_params(deploy={"max_tokens": base.deploy.max_tokens + 1})
    other = project_params(sft={"lr": base.sft.lr * 2})
    assert params_hash(sft.narrow(same)) == params_hash(sft.narrow(base))
    assert params_hash(sft.narrow(other)) != params_hash(sft.narrow(base))


def test_import_closure_follows_lazy_relative_and_from_imports(tmp_path):
    pkg = tmp_path / "components"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""docstring only: not a dependency"""\n')
    (pkg / "sub" / "__init__.py").write_text("X = 1  # code: runs on every import below it\n")
    (pkg / "stage.py").write_text("def f():\n    from components.sub import lazy\n")
    (pkg / "sub" / "lazy.py").write_text("from . import rel\nimport json\n")
    (pkg / "sub" / "rel.py").write_text("from ..leaf import thing\n")
    (pkg / "leaf.py").write_text("thing = 1\n")
    (pkg / "unused.py").write_text("")
    files = {
        p.relative_to(tmp_path).as_posix() for p in import_closure(tmp_path, "components.stage")
    }
    assert files == {
        "components/stage.py",
        "components/sub/__init__.py",
        "components/sub/lazy.py",
        "components/sub/rel.py",
        "components/leaf.py",
    }


def test_a_stage_importing_another_stages_module_fails_the_check(tmp_path):
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(
        ROOT / "components", tmp_path / "components", ignore=shutil.ignore_patterns("__pycache__")
    )
    assert stage_imports(tmp_path) == []
    # A helper the judge runs reaches into the promote stage's module.
    verdicts = tmp_path / "components" / "evaluation" / "verdicts.py"
    verdicts.write_text(verdicts.read_text() + "\nfrom components.registry.promote import run\n")
    expected = (
        "stage 'judge' runs components.evaluation.verdicts, which imports "
        "components.registry.promote (the module of stage 'promote')"
    )
    assert [e for e in stage_imports(tmp_path) if e.startswith(expected)]
    assert any(e.startswith(expected) for e in drift(tmp_path).errors)


def _dvc(root: Path, *args: str) -> str:
    proc = subprocess.run(
        [dvc_executable(), *args], cwd=root, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_editing_the_answer_scorer_makes_evaluate_stale(tmp_path):
    """The bug this issue was filed for: evaluate's judge was not a dependency."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(
        ROOT / "components", root / "components", ignore=shutil.ignore_patterns("__pycache__")
    )
    _dvc(root, "init", "--no-scm", "-q")
    # Stand-ins for evaluate's data deps and outs, so DVC can record the stage as up to date.
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stage = next(s for s in repo.index.stages if s.name == "evaluate")
        paths = [Path(o.fs_path) for o in (*stage.deps, *stage.outs)]
    for path in paths:
        if path.exists():
            continue
        target = path / "x" if not path.suffix else path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("stand-in\n")
    _dvc(root, "commit", "--force", "-q", "evaluate")
    assert json.loads(_dvc(root, "status", "--json", "evaluate")) == {}

    answer_check = root / "components" / "evaluation" / "answer_check.py"
    answer_check.write_text(answer_check.read_text() + "\n# a changed scoring rule\n")
    status = json.loads(_dvc(root, "status", "--json", "evaluate"))
    changed = [c["changed deps"] for c in status["evaluate"] if "changed deps" in c]
    assert changed and "components/evaluation/answer_check.py" in changed[0]
