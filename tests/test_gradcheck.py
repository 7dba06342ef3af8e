"""Central finite differences (float64) of sum(loss * upstream) with respect to location and
confidence against the op's backward in dygraph.

Inputs are chosen so that the loss is smooth around them under a step of 1e-6:
  * matching depends only on boxes, which are not perturbed;
  * every location entry of a positive prior is placed at target + d with |d| in [0.05, 0.9] or
    [1.1, 2.5], away from the smooth-L1 kink at |d| = 1;
  * in every image the mined cut is well separated: the K-th and (K+1)-th largest mining losses of
    the eligible priors differ by more than 1e-4 (continuous logits make exact ties impossible).
The normalizer (batch-wide positive count) is then a constant, as in the op's backward.
"""
import numpy as np
import paddle
import pytest
from hypothesis import assume, given

import paddle_ssd_op
from reference import _labels_to_int, _variances, encode, softmax_ce, ssd_loss_reference
from runner import run_dygraph
from ssd_strategies import ssd_cases, ssd_settings

STEP = 1e-6
RTOL = 1e-6
MARGIN = 1e-4


def _make_smooth(case):
    """Moves the location of positives away from the smooth-L1 kink; rejects unstable mining."""
    a = case.attrs
    ref = ssd_loss_reference(*case.args(), upstream=case.upstream, **a)
    assume(ref["num_pos"] > 0)  # otherwise every gradient is trivially 0
    rng = np.random.default_rng(int(np.abs(case.location).sum() * 1e6) % 2**32)
    n, n_prior, _ = case.location.shape
    var = _variances(case.prior_box_var, n_prior, case.dtype)
    labels = _labels_to_int(case.gt_label)
    offsets = np.concatenate([[0], np.cumsum(case.gt_lengths)])
    location = case.location.copy()
    for i in range(n):
        gts = case.gt_box[offsets[i]:offsets[i + 1]]
        labs = labels[offsets[i]:offsets[i + 1]]
        m = ref["match"][i]
        pos = m >= 0
        if pos.any():
            target = encode(gts[m[pos]], case.prior_box[pos], var[pos])
            assume(np.isfinite(target).all() and np.abs(target).max() < 1e3)
            mag = np.where(rng.random((pos.sum(), 4)) < 0.5, rng.uniform(0.05, 0.9, (pos.sum(), 4)),
                           rng.uniform(1.1, 2.5, (pos.sum(), 4)))
            location[i, pos] = target + mag * rng.choice([-1.0, 1.0], (pos.sum(), 4))
        # mining stability: gap at the cut among the eligible (unmatched) priors
        y = np.full(n_prior, a["background_label"], np.int64)
        y[pos] = labs[m[pos]]
        ce, _ = softmax_ce(case.confidence[i], y)
        k = int(ref["neg_mask"][i].sum())
        elig = np.sort(ce[~pos])[::-1]
        if 0 < k < elig.size:
            assume(elig[k - 1] - elig[k] > MARGIN)
    case.location = location
    return case


def _losses(case, location, confidence):
    """Per-image losses of the op (dygraph forward only)."""
    var = case.prior_box_var
    if isinstance(var, np.ndarray):
        var = paddle.to_tensor(var)
    with paddle.no_grad():
        loss = paddle_ssd_op.ssd_loss(
            paddle.to_tensor(location), paddle.to_tensor(confidence), paddle.to_tensor(case.gt_box),
            paddle.to_tensor(case.gt_label), paddle.to_tensor(case.prior_box), var,
            gt_lengths=[int(v) for v in case.gt_lengths], **case.attrs)
    return loss.numpy()[:, 0]


def _numeric_grad(case, which):
    """d sum_i(u_i * loss_i) / d x by central differences. Images do not interact once the
    normalizer is fixed, so one entry is perturbed in every image at once."""
    x0 = case.location if which == "location" else case.confidence
    up = np.ones(x0.shape[0]) if case.upstream is None else case.upstream[:, 0]
    grad = np.zeros_like(x0)
    for idx in np.ndindex(*x0.shape[1:]):
        sl = (slice(None),) + idx
        xs = []
        for sign in (1.0, -1.0):
            x = x0.copy()
            x[sl] += sign * STEP
            xs.append(x)
        if which == "location":
            lp, lm = _losses(case, xs[0], case.confidence), _losses(case, xs[1], case.confidence)
        else:
            lp, lm = _losses(case, case.location, xs[0]), _losses(case, case.location, xs[1])
        grad[sl] = up * (lp - lm) / (2 * STEP)
    return grad


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("match_type", ["bipartite", "per_prediction"])
@ssd_settings(12, 200)
@given(case=ssd_cases(max_n=3, max_np=10, max_c=5, max_gt=4, dtypes=("float64",),
                      logit_modes=("continuous",)))
def test_finite_differences(case, match_type, normalize):
    case.attrs.update(match_type=match_type, normalize=normalize)
    case = _make_smooth(case)
    loss, grad_location, grad_confidence = run_dygraph(*case.args(), upstream=case.upstream,
                                                       **case.attrs)
    # The rounding error of a central difference is about eps * |loss| / STEP (observed: < 1x).
    up = 1.0 if case.upstream is None else np.abs(case.upstream).max()
    atol = 1e-12 + 10 * np.finfo(np.float64).eps * up * max(1.0, np.abs(loss).max()) / STEP
    for which, got in (("location", grad_location), ("confidence", grad_confidence)):
        want = _numeric_grad(case, which)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol, err_msg="d/d " + which)
