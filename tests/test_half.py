"""float16 and bfloat16 predictions: the op computes in float32 on the upcast values, and the loss
and the gradients of location and confidence come back in the input dtype — exactly the float32
results rounded to it (a cast is exact rounding both ways)."""
import numpy as np
import paddle
import pytest

import paddle_ssd_op
from runner import run_static

N, NP, C = 3, 40, 6


def _case(seed=5):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 0.7, (NP, 2)).astype("float32")
    priors = np.concatenate([xy, xy + rng.uniform(0.1, 0.3, (NP, 2)).astype("float32")], 1)
    lengths = [2, 0, 3]
    gt = (priors[rng.integers(0, NP, 5)] + rng.normal(0, 0.02, (5, 4))).astype("float32")
    labels = rng.integers(1, C, (5, 1)).astype("int64")
    loc = rng.normal(0, 1, (N, NP, 4)).astype("float32")
    conf = rng.normal(0, 2, (N, NP, C)).astype("float32")
    return loc, conf, gt, labels, lengths, priors


def _dygraph(loc, conf, gt, labels, lengths, priors, dtype):
    loc_t = paddle.to_tensor(loc).astype(dtype)
    conf_t = paddle.to_tensor(conf).astype(dtype)
    loc_t.stop_gradient = conf_t.stop_gradient = False
    loss, targets = paddle_ssd_op.ssd_loss(loc_t, conf_t, paddle.to_tensor(gt),
                                           paddle.to_tensor(labels), paddle.to_tensor(priors),
                                           [0.1, 0.1, 0.2, 0.2], gt_lengths=lengths,
                                           return_targets=True)
    # Small integers: exact in every dtype. No arithmetic on the half loss (Paddle's CPU kernels
    # have little float16 arithmetic): the upstream gradient is given to paddle.grad.
    up = paddle.to_tensor(np.arange(1, N + 1, dtype="float32").reshape(N, 1)).astype(dtype)
    dloc, dconf = paddle.grad([loss], [loc_t, conf_t], grad_outputs=[up])
    return loss, dloc, dconf, targets


def _as32(t):
    return t.astype("float32").numpy()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_predictions_give_the_float32_results_rounded(dtype):
    loc, conf, gt, labels, lengths, priors = _case()
    loss, dloc, dconf, targets = _dygraph(loc, conf, gt, labels, lengths, priors, dtype)
    assert loss.dtype == dloc.dtype == dconf.dtype == getattr(paddle, dtype)
    # The same op in float32 on the values the half tensors hold.
    loc32 = _as32(paddle.to_tensor(loc).astype(dtype))
    conf32 = _as32(paddle.to_tensor(conf).astype(dtype))
    loss32, dloc32, dconf32, targets32 = _dygraph(loc32, conf32, gt, labels, lengths, priors,
                                                  "float32")
    for half, full in ((loss, loss32), (dloc, dloc32), (dconf, dconf32)):
        np.testing.assert_array_equal(_as32(half), _as32(full.astype(dtype)))
    np.testing.assert_array_equal(targets["match_indices"].numpy(),
                                  targets32["match_indices"].numpy())


def test_half_in_a_static_program():
    loc, conf, gt, labels, lengths, priors = _case(6)
    loc16, conf16 = loc.astype("float16"), conf.astype("float16")
    var = np.full((NP, 4), 0.1, "float32")
    loss, dloc, dconf = run_static(loc16, conf16, gt, labels, lengths, priors, var)
    assert loss.dtype == dloc.dtype == dconf.dtype == np.float16
    loss32, dloc32, dconf32 = run_static(loc16.astype("float32"), conf16.astype("float32"), gt,
                                         labels, lengths, priors, var)
    # Rounded by Paddle's cast, as in the program (Paddle 2.6's float16 rounding differs from
    # NumPy's in the last bit for a few values).
    def to16(x):
        return paddle.to_tensor(x).astype("float16").numpy()

    np.testing.assert_array_equal(loss, to16(loss32))
    np.testing.assert_array_equal(dloc, to16(dloc32))
    np.testing.assert_array_equal(dconf, to16(dconf32))


def test_half_boxes_are_rejected_with_the_dtype_expected():
    loc, conf, gt, labels, lengths, priors = _case()
    with pytest.raises(TypeError, match=r"gt_box: expected dtype float32 \(location is float16\)"):
        paddle_ssd_op.ssd_loss(paddle.to_tensor(loc).astype("float16"),
                               paddle.to_tensor(conf).astype("float16"),
                               paddle.to_tensor(gt).astype("float16"), paddle.to_tensor(labels),
                               paddle.to_tensor(priors), gt_lengths=lengths)
    with pytest.raises(TypeError, match="confidence: expected the dtype of location"):
        paddle_ssd_op.ssd_loss(paddle.to_tensor(loc).astype("float16"), paddle.to_tensor(conf),
                               paddle.to_tensor(gt), paddle.to_tensor(labels),
                               paddle.to_tensor(priors), gt_lengths=lengths)
