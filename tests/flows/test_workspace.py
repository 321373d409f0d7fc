"""Isolated runs: a git worktree sharing the user's DVC cache, saved as a DVC experiment."""

from __future__ import annotations

import subprocess

import pytest

from flows import workspace
from flows.dvc_stage import dvc_executable
from tests.flows.dvc_project import experiments, git_project


def _dvc(root, *args):
    return subprocess.run([dvc_executable(), *args], cwd=root, capture_output=True, check=True)


def test_a_workspace_carries_uncommitted_changes_shares_the_cache_and_saves_an_experiment(
    tmp_path,
):
    root = git_project(tmp_path / "p")
    _dvc(root, "repro")  # out.txt is in the user's cache now
    (root / "in.txt").write_text("b\n")  # uncommitted
    before = (root / "params.yaml").read_bytes()
    with workspace.isolated(root, "exp-a") as path:
        assert path.is_relative_to(root / workspace.WORKSPACES_DIR)
        assert (path / "in.txt").read_text() == "b\n"
        cache = _dvc(path, "cache", "dir").stdout.decode().strip()
        assert cache == str(root / ".dvc" / "cache")
        (path / "params.yaml").write_text("seed: 7\n")  # the stage reads only this
        _dvc(path, "repro")
        workspace.save_experiment(path, "exp-a")
    assert not path.exists()
    assert (root / "params.yaml").read_bytes() == before
    assert experiments(root)["exp-a"]["seed"] == 7
    # The user takes the result: its output comes out of the shared cache.
    _dvc(root, "exp", "apply", "exp-a")
    assert (root / "out.txt").read_text() == "B\n7"
    assert (root / "m" / "make.json").read_text() == "7"  # not cached, in the experiment's commit


def test_without_a_commit_or_with_an_unknown_one_nothing_is_built(tmp_path):
    root = git_project(tmp_path / "p")
    with pytest.raises(workspace.WorkspaceError, match="commit 0123abcd is not in the git"):
        workspace.create(root, "x", commit="0123abcd")
    bare = tmp_path / "bare"
    bare.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=bare, check=True)
    with pytest.raises(workspace.WorkspaceError, match="git repository with a commit"):
        workspace.create(bare, "x")
    assert not (root / workspace.WORKSPACES_DIR / "x").exists()
