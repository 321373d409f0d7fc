"""The pretraining worker starts on a bare CUDA image: torch, transformers, deepspeed and the
schema (pydantic, yaml) only. Anything the pipeline's CPU side uses is blocked here."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT

NOT_ON_GPU_IMAGE = (
    "mlflow",
    "prefect",
    "dvc",
    "great_expectations",
    "pyarrow",
    "pandas",
    "sklearn",
    "dask",
    "datasketch",
    "trafilatura",
    "matplotlib",
)


def test_pretrain_worker_imports_without_tracking_or_orchestration_packages():
    block = "; ".join(f"sys.modules[{m!r}] = None" for m in NOT_ON_GPU_IMAGE)
    code = f"import sys; {block}; import components.training.pretrain_worker as w; print(w.Reads)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Reads" in proc.stdout


def test_quantize_stage_imports_its_worker_without_llm_compressor():
    """The stage imports the worker's job format (so dvc.yaml lists the worker as a code dep);
    llm-compressor exists only in .venv-quantize, so the worker must load it lazily."""
    code = (
        "import sys; sys.modules['llmcompressor'] = None; "
        "import components.training.quantize as q; print(q.job.__module__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "components.training.quantize_worker" in proc.stdout
