"""The golden cases computed by the real fluid 1.8.5 ssd_loss (tests/data/golden*/)."""
import json
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
GOLDEN_FILES = sorted((DATA / "golden").glob("*.npz"))
# Loss and gradients of the float32 original support about this (summation order may differ).
RTOL, ATOL = 2e-5, 1e-6


class Case:
    """One stored case: inputs, attributes and the original's loss and gradients."""

    def __init__(self, path):
        d = np.load(path)
        self.name = Path(path).stem
        self.location = d["location"]
        self.confidence = d["confidence"]
        self.gt_box = d["gt_box"]
        self.gt_label = d["gt_label"]
        self.gt_lengths = d["gt_lens"].astype(np.int64)
        self.prior_box = d["prior_box"]
        self.prior_box_var = d["prior_box_var"] if bool(d["has_prior_box_var"]) else None
        self.attrs = json.loads(str(d["attrs"]))
        self.upstream = d["upstream"]
        self.loss = d["loss"]
        self.grad_location = d["grad_location"]
        self.grad_confidence = d["grad_confidence"]
        if np.isnan(self.loss).any():
            # No positive in the batch: fluid divides 0 by 0; we clamp the divisor at 1
            # (docs/semantics.md §11).
            self.loss = np.zeros_like(self.loss)
            self.grad_location = np.zeros_like(self.grad_location)
            self.grad_confidence = np.zeros_like(self.grad_confidence)

    def assert_matches(self, loss, grad_location, grad_confidence):
        np.testing.assert_allclose(loss, self.loss, rtol=RTOL, atol=ATOL, err_msg="loss")
        np.testing.assert_allclose(grad_location, self.grad_location, rtol=RTOL, atol=ATOL,
                                   err_msg="grad_location")
        np.testing.assert_allclose(grad_confidence, self.grad_confidence, rtol=RTOL, atol=ATOL,
                                   err_msg="grad_confidence")


def golden_params():
    import pytest

    return pytest.mark.parametrize("path", GOLDEN_FILES, ids=[p.stem for p in GOLDEN_FILES])
