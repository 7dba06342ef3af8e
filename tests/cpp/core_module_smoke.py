"""Smoke test of the pybind11 module `_core` built by CMake (run by ctest as core.python_module
with PYTHONPATH set to the build directory): import it, run example E1 of docs/semantics.md §9
forward and backward, and check that bad input raises ValueError."""
import sys

import numpy as np

import _core

location = np.array([[[.1, -.2, .3, 0], [0, 0, 0, 0], [.5, .5, .5, .5], [1, 2, -3, 0]]], np.float32)
confidence = np.array([[[1, 2, 0], [.5, 0, 0], [0, 1, 3], [2, 0, 1]]], np.float32)
inputs = dict(
    location=location,
    confidence=confidence,
    gt_box=np.array([[0, 0, .5, .5]], np.float32),
    gt_label=np.array([1], np.int64),
    gt_lengths=np.array([1], np.int64),
    prior_box=np.array([[0, 0, .5, .5], [0, 0, .5, .6], [.5, .5, 1, 1], [.25, .25, .75, .75]],
                       np.float32),
    prior_box_var=np.array([.1, .1, .2, .2], np.float32),  # the 4-value (shared) form
)

out = _core.forward(**inputs)
assert out["loss"].shape == (1, 1), out["loss"].shape
np.testing.assert_allclose(out["loss"].ravel(), [3.05609], rtol=2e-5)
np.testing.assert_array_equal(out["match"].ravel(), [0, 0, -1, -1])

grad_location, grad_confidence = _core.backward(location, confidence, np.ones(1, np.float32), out)
np.testing.assert_allclose(grad_location[0, 1], [0, .416667, 0, .455804], rtol=2e-5, atol=1e-6)
np.testing.assert_allclose(grad_confidence[0, 2], [-.478995, .0570976, .421897], rtol=2e-5,
                           atol=1e-6)

try:
    _core.forward(**dict(inputs, gt_label=np.array([3], np.int64)))
except ValueError as e:
    assert "gt_label" in str(e), e
else:
    sys.exit("a label out of [0, C) was accepted")

print("ok: _core from", _core.__file__)
