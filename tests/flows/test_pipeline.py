"""The pipeline flow's own steps beside the stages (the stages: test_dvc_stage.py)."""

import logging

from flows.pipeline import record_experiment
from tests.flows.dvc_project import make_project


def test_an_experiment_save_that_overruns_its_time_is_stopped_with_a_warning(tmp_path, caplog):
    root = make_project(tmp_path / "p")
    logger = logging.getLogger("test-pipeline")
    record_experiment(root, "exp-1", logger, timeout_s=0.01)  # dvc starts slower than that
    assert "`dvc exp save -n exp-1` did not finish in 0.01 s and was stopped" in caplog.text
