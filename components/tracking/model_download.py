"""Download a registered model and find the Hugging Face directory inside it.

Every model the project registers is a pyfunc whose artifact `hf_model` is the HF directory as
saved (components/tracking/hf_pyfunc.py); the deploy stage serves it, the judge compares with it.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import yaml

from components.tracking.hf_pyfunc import HF_ARTIFACT


def hf_model_dir(model_root: Path, marker: str = "config.json") -> Path:
    """The HF directory inside a downloaded pyfunc model (path recorded in its MLmodel file);
    `marker` is the file it must hold (adapter_config.json for a PEFT adapter)."""
    mlmodel = model_root / "MLmodel"
    rel = f"artifacts/{HF_ARTIFACT}"
    if mlmodel.exists():
        spec = yaml.safe_load(mlmodel.read_text()) or {}
        artifacts = spec.get("flavors", {}).get("python_function", {}).get("artifacts", {})
        rel = artifacts.get(HF_ARTIFACT, {}).get("path", rel)
    hf_dir = model_root / rel
    if not (hf_dir / marker).exists():
        raise FileNotFoundError(
            f"{hf_dir} holds no {marker}: {model_root} is not a model registered by "
            f"components.tracking.registry (expected the HF directory under artifact "
            f"{HF_ARTIFACT!r})"
        )
    return hf_dir


def download_model(model_uri: str, dst: Path, marker: str = "config.json") -> Path:
    """Download a registered model and return its HF directory."""
    root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    return hf_model_dir(root, marker)
