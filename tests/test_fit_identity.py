"""Training is unchanged by refactors: small fits against fingerprints recorded before them.

``tests/fit_identity.py record`` wrote ``tests/data/fit_identity.json``; on the machine and torch it
was recorded with, every trained tensor must be bitwise identical. Elsewhere (another CPU's floating
point) the predictions must still agree closely.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _threads import one_torch_thread
from fit_identity import REFERENCE, fits, machine


@pytest.fixture(scope="module")
def current():
    with one_torch_thread():  # fits() sets one thread, as recorded; the count comes back after it
        return fits()


@pytest.mark.parametrize("name", ["selection", "nb_counts", "given_validation", "time_axis", "streamed"])
def test_fit_matches_the_recorded_one(current, name):
    recorded = json.loads(REFERENCE.read_text())
    expected, got = recorded["fits"][name], current[name]
    assert got["steps_run"] == expected["steps_run"]
    assert sorted(got["tensors"]) == sorted(expected["tensors"])
    if recorded["machine"] == machine():
        assert got["tensors"] == expected["tensors"], f"{name}: trained weights differ bitwise from the recorded fit"
    np.testing.assert_allclose(got["prediction_sample"], expected["prediction_sample"], rtol=1e-3, atol=1e-3)
    assert got["prediction_sum"] == pytest.approx(expected["prediction_sum"], rel=1e-4)
