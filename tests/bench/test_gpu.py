"""bench/gpu.py starts on a bare CUDA image, says so plainly without a GPU, and its --smoke run
walks every measured path (bare loops, the pretrain worker with consolidation, SFT, DPO, LoRA
and QLoRA SFT)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.components.training.test_worker_imports import NOT_ON_GPU_IMAGE
from tests.helpers import ROOT

BENCH = ROOT / "bench" / "gpu.py"


def _run(code_or_args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *code_or_args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_imports_without_tracking_or_orchestration_packages():
    block = "; ".join(f"sys.modules[{m!r}] = None" for m in NOT_ON_GPU_IMAGE)
    code = (
        f"import sys, runpy; {block}; "
        f"m = runpy.run_path({str(BENCH)!r}, run_name='bench_gpu'); "
        "import trl, peft; "
        "from components.training import trainer_args, pretrain_worker, lora_load; "
        "print(m['NO_GPU'])"
    )
    proc = _run(["-c", code])
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    out = tmp_path / "gpu.json"
    proc = _run([str(BENCH), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no CUDA GPU visible" in proc.stdout and "nothing measured" in proc.stdout
    assert not out.exists()  # no numbers pretending to be GPU numbers


@pytest.mark.slow
def test_smoke_walks_every_path_on_cpu(tmp_path):
    out = tmp_path / "smoke.json"
    proc = _run([str(BENCH), "--smoke", "--steps", "4", "--warmup", "1", "--out", str(out)], 600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["smoke"] is True and result["device"] == "cpu"
    for key in ("bare_eager", "bare_compiled", "pretrain"):
        assert result[key]["tokens_per_s"] > 0, key
    consolidation = result["pretrain"]["consolidation"]
    assert consolidation["max_rel_logit_diff"] <= consolidation["tolerance"]
    post = result["post_training"]
    assert post["sft"]["loss"] > 0 and post["dpo"]["loss"] > 0
    assert post["lora"]["loss"] > 0 and 0 < post["lora"]["trainable_fraction"] < 0.5
    # bitsandbytes is in the project's environment: QLoRA runs here (skipped only without it).
    assert post["qlora"]["loss"] > 0
    assert post["qlora"]["trainable_fraction"] == pytest.approx(post["lora"]["trainable_fraction"])
