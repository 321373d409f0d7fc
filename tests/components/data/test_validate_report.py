"""The GE report a gate writes depends only on the data and the suite (it is a DVC dependency
of the next stage): two validations of the same frame write the same bytes."""

import json

import pandas as pd

from components.data import expectations, validate
from tests.helpers import project_params


def test_two_validations_of_the_same_data_write_the_same_report(tmp_path):
    params = validate.Reads.narrow(project_params())
    df = pd.DataFrame({"id": ["a", "b"], "text": ["hello world", "more"], "source": ["x", "y"]})
    results = [
        expectations.validate_frame(df, validate.raw_docs_suite(params), tmp_path / f"site{i}")
        for i in range(2)
    ]
    assert results[0] != results[1]  # GE stamps uuids and clock times on every run
    a, b = (json.dumps(expectations.stable(r), sort_keys=True, default=str) for r in results)
    assert a == b
    assert '"column": "id"' in a  # the data-bearing fields stay
