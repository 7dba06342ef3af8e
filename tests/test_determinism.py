"""Determinism: the same inputs give bit-identical loss and gradients across repeated calls and
across CPU thread counts (paddle_ssd_op.set_num_threads), on a batch full of ties."""
import numpy as np
import pytest

import paddle_ssd_op
from reference import _labels_to_int, ssd_loss_reference
from runner import run_dygraph, run_static
from ssd_strategies import _gts, _logits, _priors

N, NP, C = 8, 500, 21
THREADS = (1, 2, 3)
REPEATS = 3


def _inputs(dtype, seed=20240611):
    rng = np.random.default_rng(seed)
    priors = _priors(rng, NP, "mixed", dtype)  # grid boxes, duplicates, zero-area priors
    lengths = rng.integers(0, 7, N)
    lengths[3] = 0  # an image without gt
    gt = _gts(rng, int(lengths.sum()), priors, "mixed", dtype)
    labels = rng.integers(0, C, (len(gt), 1)).astype("int64")
    loc = rng.normal(0, 1, (N, NP, 4)).astype(dtype)
    conf = _logits(rng, (N, NP, C), "templates", dtype)  # exact mining ties
    conf[::2] = _logits(rng, (N, NP, C), "quantized", dtype)[::2]
    var = rng.uniform(0.05, 2, (NP, 4)).astype(dtype)
    up = rng.normal(0, 1, (N, 1)).astype(dtype)
    return (loc, conf, gt, labels, lengths, priors, var), up


def _bits(arrays):
    return [np.ascontiguousarray(a).tobytes() for a in arrays]


def _core(args, up, attrs):
    from paddle_ssd_op import _core

    loc, conf, gt, labels, lengths, priors, var = args
    saved = _core.forward(loc, conf, gt, _labels_to_int(labels), np.asarray(lengths, np.int64),
                          priors, var, **attrs)
    gl, gc = _core.backward(loc, conf, up, saved)
    return saved["loss"], gl, gc


RUNS = {
    "dygraph": lambda args, up, attrs: run_dygraph(*args, upstream=up, **attrs),
    "static": lambda args, up, attrs: run_static(*args, upstream=up, **attrs),
    "core": _core,
}


@pytest.mark.parametrize("runner", sorted(RUNS))
@pytest.mark.parametrize("match_type", ["bipartite", "per_prediction"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bit_identical_across_calls_and_threads(dtype, match_type, runner):
    args, up = _inputs(dtype)
    attrs = dict(background_label=0, overlap_threshold=0.5, neg_pos_ratio=3.0,
                 match_type=match_type)
    run = RUNS[runner]
    try:
        paddle_ssd_op.set_num_threads(None)
        first = _bits(run(args, up, attrs))
        for _ in range(REPEATS - 1):
            assert _bits(run(args, up, attrs)) == first, "default threads: repeated call differs"
        for n in THREADS:
            paddle_ssd_op.set_num_threads(n)
            assert paddle_ssd_op.get_num_threads() == n
            for rep in range(REPEATS):
                got = _bits(run(args, up, attrs))
                for name, a, b in zip(("loss", "grad_location", "grad_confidence"), got, first):
                    assert a == b, "%s differs with %d threads (call %d)" % (name, n, rep)
    finally:
        paddle_ssd_op.set_num_threads(None)

    # and the result is the right one (the batch really has ties and positives)
    loss, gl, gc = run(args, up, attrs)
    ref = ssd_loss_reference(*args, upstream=up, **attrs)
    assert ref["num_pos"] > 0 and ref["neg_mask"].any()
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loss, ref["loss"], **tol)
    np.testing.assert_allclose(gl, ref["grad_location"], **tol)
    np.testing.assert_allclose(gc, ref["grad_confidence"], **tol)


def test_set_num_threads_restores_default():
    default = paddle_ssd_op.get_num_threads()
    try:
        paddle_ssd_op.set_num_threads(2)
        assert paddle_ssd_op.get_num_threads() == 2
    finally:
        paddle_ssd_op.set_num_threads(None)
    assert paddle_ssd_op.get_num_threads() == default
