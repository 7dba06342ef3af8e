"""Runs paddle_ssd_op.ssd_loss on NumPy inputs in dygraph or in a static program fed with
LoDTensors, returning the loss and the gradients of sum(loss * upstream)."""
import numpy as np
import paddle

import paddle_ssd_op


def run_dygraph(location, confidence, gt_box, gt_label, gt_lengths, prior_box,
                prior_box_var=None, upstream=None, **attrs):
    loc = paddle.to_tensor(location, stop_gradient=False)
    conf = paddle.to_tensor(confidence, stop_gradient=False)
    var = prior_box_var if prior_box_var is None or isinstance(prior_box_var, (list, tuple)) \
        else paddle.to_tensor(prior_box_var)
    loss = paddle_ssd_op.ssd_loss(loc, conf, paddle.to_tensor(gt_box), paddle.to_tensor(gt_label),
                                  paddle.to_tensor(prior_box), var,
                                  gt_lengths=[int(n) for n in gt_lengths], **attrs)
    up = np.ones(loss.shape, loss.numpy().dtype) if upstream is None else upstream
    paddle.sum(loss * paddle.to_tensor(up.astype(loss.numpy().dtype))).backward()
    return loss.numpy(), loc.grad.numpy(), conf.grad.numpy()


def run_static(location, confidence, gt_box, gt_label, gt_lengths, prior_box,
               prior_box_var=None, upstream=None, **attrs):
    """A fluid-style program: gt_box/gt_label are LoDTensors whose LoD the kernel reads."""
    dtype = str(location.dtype)
    # float16 predictions: boxes, variances and the upstream gradient in float32 (Paddle's CPU
    # kernels have no float16 arithmetic; the op computes in float32 anyway).
    boxes = "float32" if dtype == "float16" else dtype
    n = location.shape[0]
    upstream = np.ones((n, 1), boxes) if upstream is None else upstream.astype(boxes)
    main, startup = paddle.static.Program(), paddle.static.Program()
    paddle.enable_static()
    try:
        with paddle.static.program_guard(main, startup):
            loc = paddle.static.data("location", list(location.shape), dtype)
            conf = paddle.static.data("confidence", list(confidence.shape), dtype)
            loc.stop_gradient = False
            conf.stop_gradient = False
            box = paddle.static.data("gt_box", [-1, 4], boxes, lod_level=1)
            label = paddle.static.data("gt_label", [-1] + list(gt_label.shape[1:]),
                                       str(gt_label.dtype), lod_level=1)
            prior = paddle.static.data("prior_box", list(prior_box.shape), boxes)
            feed_var = isinstance(prior_box_var, np.ndarray)
            var = paddle.static.data("prior_box_var", list(prior_box_var.shape), boxes) \
                if feed_var else prior_box_var
            up = paddle.static.data("upstream", [n, 1], boxes)
            loss = paddle_ssd_op.ssd_loss(loc, conf, box, label, prior, var, **attrs)
            objective = paddle.sum((loss if boxes == dtype else paddle.cast(loss, boxes)) * up)
            grads = paddle.static.gradients([objective], [loc, conf])
        place = paddle.CPUPlace()
        lod = [[int(v) for v in gt_lengths]]
        feed = {
            "location": location, "confidence": confidence, "prior_box": prior_box,
            "upstream": upstream,
            "gt_box": paddle.base.create_lod_tensor(gt_box, lod, place),
            "gt_label": paddle.base.create_lod_tensor(gt_label, lod, place),
        }
        if feed_var:
            feed["prior_box_var"] = prior_box_var
        exe = paddle.static.Executor(place)
        exe.run(startup)
        out = exe.run(main, feed=feed, fetch_list=[loss] + list(grads))
    finally:
        paddle.disable_static()
    return tuple(np.asarray(o) for o in out)


RUNNERS = {"dygraph": run_dygraph, "static": run_static}
