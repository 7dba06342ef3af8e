"""paddle_ssd_op in one screen: a fluid-style static program fed with LoDTensors, and the same
batch in dygraph, on the real SSD300 priors (8732 boxes, 21 classes)."""
import zlib  # noqa: F401  -- must precede paddle: paddle 2.6.2 exports a zlib that crashes Python's
import os
import time

os.environ.setdefault("GLOG_minloglevel", "2")  # keep Paddle's executor INFO lines out of the demo

import numpy as np
import paddle

import paddle_ssd_op
from paddle_ssd_op.priors import ssd300_priors

N, C = 8, 21


def make_batch(rng, prior_box):
    """Random predictions and 0-5 object-like gt boxes per image (one image has none)."""
    np_ = prior_box.shape[0]
    location = rng.normal(0, 1, (N, np_, 4)).astype("float32")
    confidence = rng.normal(0, 1, (N, np_, C)).astype("float32")
    lengths = rng.integers(1, 6, N)
    lengths[1] = 0
    centre = rng.uniform(0.2, 0.8, (lengths.sum(), 2))
    size = rng.uniform(0.1, 0.4, (lengths.sum(), 2))
    gt_box = np.concatenate([centre - size / 2, centre + size / 2], 1).clip(0, 1).astype("float32")
    gt_label = rng.integers(1, C, (lengths.sum(), 1)).astype("int32")
    return location, confidence, gt_box, gt_label, lengths


def timed(fn, repeat=5):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, 1e3 * float(np.median(times))


def run_static(location, confidence, gt_box, gt_label, lengths, prior_box, prior_var):
    paddle.enable_static()
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        loc = paddle.static.data("location", [N, prior_box.shape[0], 4], "float32")
        conf = paddle.static.data("confidence", [N, prior_box.shape[0], C], "float32")
        loc.stop_gradient = conf.stop_gradient = False
        box = paddle.static.data("gt_box", [-1, 4], "float32", lod_level=1)
        label = paddle.static.data("gt_label", [-1, 1], "int32", lod_level=1)
        prior = paddle.static.data("prior_box", list(prior_box.shape), "float32")
        var = paddle.static.data("prior_box_var", list(prior_var.shape), "float32")
        # The call a fluid 1.8 program makes, with the import changed:
        loss = paddle_ssd_op.ssd_loss(loc, conf, box, label, prior, var)
        grads = paddle.static.gradients([paddle.sum(loss)], [loc, conf])
    place = paddle.CPUPlace()
    lod = [lengths.tolist()]
    feed = {"location": location, "confidence": confidence, "prior_box": prior_box,
            "prior_box_var": prior_var,
            "gt_box": paddle.base.create_lod_tensor(gt_box, lod, place),
            "gt_label": paddle.base.create_lod_tensor(gt_label, lod, place)}
    exe = paddle.static.Executor(place)
    exe.run(startup)
    result, ms = timed(lambda: exe.run(main, feed=feed, fetch_list=[loss] + grads))
    paddle.disable_static()
    return result, ms


def run_dygraph(location, confidence, gt_box, gt_label, lengths, prior_box, prior_var):
    def step():
        loc = paddle.to_tensor(location, stop_gradient=False)
        conf = paddle.to_tensor(confidence, stop_gradient=False)
        loss = paddle_ssd_op.ssd_loss(loc, conf, paddle.to_tensor(gt_box),
                                      paddle.to_tensor(gt_label), paddle.to_tensor(prior_box),
                                      paddle.to_tensor(prior_var), gt_lengths=lengths.tolist())
        paddle.sum(loss).backward()
        return loss.numpy(), loc.grad.numpy(), conf.grad.numpy()

    return timed(step)


def main():
    rng = np.random.default_rng(0)
    prior_box, prior_var = ssd300_priors()
    batch = make_batch(rng, prior_box)
    print(f"paddle {paddle.__version__}, paddle_ssd_op {paddle_ssd_op.__version__}, "
          f"{paddle_ssd_op.get_num_threads()} threads")
    print(f"batch: N={N} images, Np={prior_box.shape[0]} SSD300 priors, C={C} classes, "
          f"gt boxes per image {batch[4].tolist()}")
    for mode, run in (("static (LoDTensor feed)", run_static), ("dygraph (gt_lengths)", run_dygraph)):
        (loss, grad_loc, grad_conf), ms = run(*batch, prior_box, prior_var)
        print(f"\n{mode}: forward+backward {ms:.1f} ms (median of 5)")
        print("  loss per image:", np.array2string(loss.ravel(), precision=4))
        print(f"  |d loss/d location| = {np.linalg.norm(grad_loc):.6f}   "
              f"|d loss/d confidence| = {np.linalg.norm(grad_conf):.6f}")
        if mode.startswith("static"):
            reference = (loss, grad_loc, grad_conf)
    same = all(np.array_equal(a, b) for a, b in zip(reference, (loss, grad_loc, grad_conf)))
    print(f"\nstatic and dygraph results bit-identical: {same}")


if __name__ == "__main__":
    main()
