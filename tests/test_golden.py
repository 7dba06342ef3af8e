"""The fused op against the real fluid 1.8.5 ssd_loss: loss and both gradients, in dygraph (with
gt_lengths) and in static programs fed with LoDTensors."""
import pytest

from cases import Case, golden_params
from runner import RUNNERS


@pytest.mark.parametrize("mode", sorted(RUNNERS))
@golden_params()
def test_golden(path, mode):
    case = Case(path)
    loss, grad_location, grad_confidence = RUNNERS[mode](
        case.location, case.confidence, case.gt_box, case.gt_label, case.gt_lengths,
        case.prior_box, case.prior_box_var, upstream=case.upstream, **case.attrs)
    assert loss.shape == case.loss.shape
    case.assert_matches(loss, grad_location, grad_confidence)
