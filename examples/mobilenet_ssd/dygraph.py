"""The MobileNet-SSD of mobilenet_ssd.py as a dygraph ``paddle.nn.Layer`` (same layers, same
parameters in the same creation order), trained and evaluated like train.py:

    python examples/mobilenet_ssd/dygraph.py                      # 300 steps, eval, save/reload
    python examples/mobilenet_ssd/dygraph.py --steps 4 --eval-batches 2   # the short form

Batches are plain tensors: the gt boxes of the batch concatenated, ``gt_lengths`` giving the
boxes of each image (the LoD's job in the static program); images may have no box.
"""
import zlib  # noqa: F401  -- must precede paddle: paddle 2.6.2 exports a zlib that crashes Python's
import argparse
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np
import paddle_ssd_op
import paddle

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from synthetic_voc import IMAGE_SHAPE, NUM_CLASSES, make_batch  # noqa: E402

EVAL_SEED = 10 ** 6  # eval batches use seeds from here on


class ConvBN(paddle.nn.Layer):
    """mobilenet_ssd.conv_bn as a layer."""

    def __init__(self, in_channels, filter_size, num_filters, stride, padding, num_groups=1,
                 act="relu"):
        super().__init__()
        self.conv = paddle.nn.Conv2D(
            in_channels, num_filters, filter_size, stride=stride, padding=padding,
            groups=num_groups,
            weight_attr=paddle.ParamAttr(learning_rate=0.1,
                                         initializer=paddle.nn.initializer.KaimingUniform()),
            bias_attr=False)
        self.bn = paddle.nn.BatchNorm(num_filters, act=act)

    def forward(self, x):
        return self.bn(self.conv(x))


def depthwise_separable(in_channels, num_filters1, num_filters2, num_groups, stride):
    return [ConvBN(in_channels, 3, num_filters1, stride, 1, num_groups=num_groups),
            ConvBN(num_filters1, 1, num_filters2, 1, 0)]


def extra_block(in_channels, num_filters1, num_filters2, stride):
    return [ConvBN(in_channels, 1, num_filters1, 1, 0),
            ConvBN(num_filters1, 3, num_filters2, stride, 1)]


class MobileNetSSD(paddle.nn.Layer):
    """forward(image) -> (mbox_locs, mbox_confs, boxes, variances), as mobilenet_ssd()."""

    def __init__(self, num_classes=NUM_CLASSES, image_shape=IMAGE_SHAPE):
        super().__init__()
        body = [ConvBN(3, 3, 32, 2, 1)]
        for args in ((32, 32, 64, 32, 1), (64, 64, 128, 64, 2), (128, 128, 128, 128, 1),
                     (128, 128, 256, 128, 2), (256, 256, 256, 256, 1), (256, 256, 512, 256, 2)):
            body += depthwise_separable(*args)
        for _ in range(5):
            body += depthwise_separable(512, 512, 512, 512, 1)
        self.body = paddle.nn.Sequential(*body)                                   # -> module11
        self.module13 = paddle.nn.Sequential(*depthwise_separable(512, 512, 1024, 512, 2),
                                             *depthwise_separable(1024, 1024, 1024, 1024, 1))
        self.extras = paddle.nn.LayerList([paddle.nn.Sequential(*extra_block(*args)) for args in
                                           ((1024, 256, 512, 2), (512, 128, 256, 2),
                                            (256, 128, 256, 2), (256, 64, 128, 2))])
        self.head = paddle_ssd_op.MultiBoxHead(
            in_channels=[512, 1024, 512, 256, 256, 128], num_classes=num_classes,
            min_ratio=20, max_ratio=90, min_sizes=[60.0, 105.0, 150.0, 195.0, 240.0, 285.0],
            max_sizes=[[], 150.0, 195.0, 240.0, 285.0, 300.0],
            aspect_ratios=[[2.], [2., 3.], [2., 3.], [2., 3.], [2., 3.], [2., 3.]],
            base_size=image_shape[2], offset=0.5, flip=True)

    def forward(self, image):
        features = [self.body(image)]
        features.append(self.module13(features[-1]))
        for extra in self.extras:
            features.append(extra(features[-1]))
        return self.head(features, image)


def to_tensors(batch):
    return (paddle.to_tensor(batch["image"]), paddle.to_tensor(batch["gt_box"]),
            paddle.to_tensor(batch["gt_label"]), batch["lengths"])


def train_step(model, optimizer, batch):
    """One step; returns the loss (the batch's ssd_loss summed, as the static program)."""
    image, gt_box, gt_label, lengths = to_tensors(batch)
    locs, confs, box, box_var = model(image)
    loss = paddle.sum(paddle_ssd_op.ssd_loss(locs, confs, gt_box, gt_label, box, box_var,
                                             gt_lengths=lengths))
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()
    return float(loss)


@paddle.no_grad()
def evaluate(model, batches):
    """mAP (11point, difficult boxes ignored) over ``batches``, as train.evaluate."""
    model.eval()
    map_eval = paddle_ssd_op.DetectionMAP(NUM_CLASSES, overlap_threshold=0.5,
                                          evaluate_difficult=False, ap_version="11point")
    for batch in batches:
        locs, confs, box, box_var = model(paddle.to_tensor(batch["image"]))
        out, rois_num = paddle_ssd_op.detection_output(locs, confs, box, box_var,
                                                       nms_threshold=0.45, return_rois_num=True)
        map_eval.update(out.numpy(), batch["gt_box"], batch["gt_label"],
                        detection_lengths=rois_num.numpy(), gt_lengths=batch["lengths"],
                        difficult=batch["difficult"])
    model.train()
    return map_eval.accumulate()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--eval-batches", type=int, default=10)
    parser.add_argument("--model-save-dir", default="mobilenet_ssd_dygraph_model")
    parser.add_argument("--seed", type=int, default=111, help="of the initial parameters")
    args = parser.parse_args(argv)
    paddle.seed(args.seed)

    model = MobileNetSSD()
    boundaries = [int(args.steps * f) for f in (0.5, 0.75)]
    schedule = paddle.optimizer.lr.PiecewiseDecay(
        boundaries, [args.learning_rate * f for f in (1, 0.5, 0.1)])
    optimizer = paddle.optimizer.RMSProp(learning_rate=schedule, parameters=model.parameters(),
                                         weight_decay=paddle.regularizer.L2Decay(0.00005))
    losses = []
    for step in range(args.steps):
        losses.append(train_step(model, optimizer, make_batch(step, args.batch_size)))
        schedule.step()
        if step % 10 == 0:
            print("step {:d}, loss {:.6f}".format(step, losses[-1]), flush=True)
    if args.steps:
        print("loss, first 10 steps {:.4f}, last 10 steps {:.4f}".format(
            np.mean(losses[:10]), np.mean(losses[-10:])))

    eval_batches = [make_batch(EVAL_SEED + i, args.batch_size) for i in range(args.eval_batches)]
    test_map = evaluate(model, eval_batches)
    print("test mAP {:.4f}".format(test_map))

    os.makedirs(args.model_save_dir, exist_ok=True)
    path = os.path.join(args.model_save_dir, "final.pdparams")
    paddle.save(model.state_dict(), path)
    reloaded = MobileNetSSD()
    reloaded.set_state_dict(paddle.load(path))
    reloaded_map = evaluate(reloaded, eval_batches)
    print("reloaded mAP {:.4f}".format(reloaded_map))
    assert reloaded_map == test_map, (reloaded_map, test_map)
    return {"losses": losses, "map": test_map}


if __name__ == "__main__":
    main()
