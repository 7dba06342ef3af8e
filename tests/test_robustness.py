"""Defined behaviour on hostile values (docs/errors.md), memory that does not grow over many calls,
and concurrent calls from Python threads."""
import threading

import numpy as np
import paddle
import pytest

import paddle_ssd_op
from reference import ssd_loss_reference
from runner import run_dygraph

PRIORS = np.array([[0, 0, .5, .5], [.5, 0, 1, .5], [0, .5, .5, 1], [.5, .5, 1, 1],
                   [.2, .2, .7, .7], [0, 0, 1, 1]], np.float32)


def batch(seed=0, n=2, lengths=(1, 2), num_classes=4):
    rng = np.random.default_rng(seed)
    np_ = PRIORS.shape[0]
    return dict(
        location=rng.standard_normal((n, np_, 4)).astype(np.float32),
        confidence=rng.standard_normal((n, np_, num_classes)).astype(np.float32),
        gt_box=np.array([[0, 0, .5, .5], [.5, .5, 1, 1], [.2, .2, .8, .8]], np.float32)[
            :sum(lengths)],
        gt_label=rng.integers(1, num_classes, (sum(lengths), 1)).astype(np.int32),
        gt_lengths=list(lengths),
        prior_box=PRIORS,
    )


@pytest.mark.parametrize("name, value", [("location", np.nan), ("location", np.inf),
                                         ("confidence", np.nan), ("confidence", np.inf)])
def test_non_finite_prediction_poisons_only_its_image(name, value):
    b = batch()
    clean, _, _ = run_dygraph(**b)
    b[name][1, 3, 0] = value
    loss, grad_location, grad_confidence = run_dygraph(**b)
    assert np.isnan(loss[1, 0])
    # the other image's loss is untouched, and nothing crashed in matching or mining
    assert loss[0, 0] == clean[0, 0]
    assert np.isfinite(grad_location[0]).all() and np.isfinite(grad_confidence[0]).all()


@pytest.mark.parametrize("box", [[np.nan, 0, .5, .5], [.5, .5, 0, 0], [.3, .3, .3, .3],
                                 [np.inf, np.inf, np.inf, np.inf]],
                         ids=["nan", "inverted", "zero_area", "inf"])
def test_degenerate_gt_box_is_never_matched(box):
    b = batch(lengths=(1, 2))
    b["gt_box"][0] = box  # image 0's only box
    dummy = dict(b)
    # Equivalent to an image without gt: same loss and gradients as gt_lengths [0, 2]
    dummy["gt_box"], dummy["gt_label"] = b["gt_box"][1:], b["gt_label"][1:]
    dummy["gt_lengths"] = [0, 2]
    got = run_dygraph(**b)
    expected = run_dygraph(**dummy)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    assert np.isfinite(got[0]).all()


def test_degenerate_priors_are_never_matched():
    b = batch()
    b["prior_box"] = PRIORS.copy()
    b["prior_box"][5] = [np.nan, 0, 1, 1]
    b["prior_box"][4] = [.7, .7, .2, .2]
    ref = ssd_loss_reference(**b)
    loss, _, _ = run_dygraph(**b)
    assert np.isfinite(loss).all()
    np.testing.assert_allclose(loss, ref["loss"], rtol=2e-5, atol=1e-6)
    assert (ref["match"][:, 4:] == -1).all()


def test_thousands_of_gt_boxes_in_one_image():
    rng = np.random.default_rng(3)
    n_gt, np_ = 3000, 400
    centre = rng.uniform(0.1, 0.9, (np_ + n_gt, 2)).astype(np.float32)
    size = rng.uniform(0.05, 0.3, (np_ + n_gt, 2)).astype(np.float32)
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
    b = dict(location=rng.standard_normal((1, np_, 4)).astype(np.float32),
             confidence=rng.standard_normal((1, np_, 5)).astype(np.float32),
             gt_box=boxes[np_:], gt_label=rng.integers(0, 5, (n_gt, 1)).astype(np.int64),
             gt_lengths=[n_gt], prior_box=boxes[:np_])
    loss, grad_location, grad_confidence = run_dygraph(**b)
    ref = ssd_loss_reference(**b)
    np.testing.assert_allclose(loss, ref["loss"], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(grad_confidence, ref["grad_confidence"], rtol=2e-5, atol=1e-6)


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
def test_memory_does_not_grow_over_10000_calls():
    b = batch(seed=1)
    tensors = {k: paddle.to_tensor(v) for k, v in b.items() if k != "gt_lengths"}

    def step():
        loc = paddle.to_tensor(b["location"], stop_gradient=False)
        conf = paddle.to_tensor(b["confidence"], stop_gradient=False)
        loss = paddle_ssd_op.ssd_loss(loc, conf, tensors["gt_box"], tensors["gt_label"],
                                      tensors["prior_box"], gt_lengths=b["gt_lengths"])
        paddle.sum(loss).backward()

    for _ in range(500):  # warm up Paddle's caches and allocator
        step()
    before = _rss_mb()
    for _ in range(10000):
        step()
    grown = _rss_mb() - before
    assert grown < 5, f"RSS grew by {grown:.1f} MB over 10000 forward+backward calls"


def test_concurrent_python_threads_get_serial_results():
    batches = [batch(seed=s) for s in range(4)]
    serial = [run_dygraph(**b) for b in batches]
    results = [None] * len(batches)
    errors = []

    def work(k):
        try:
            for _ in range(5):
                results[k] = run_dygraph(**batches[k])
        except Exception as e:  # reported below: a thread's exception would be lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, expected in zip(results, serial):
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
