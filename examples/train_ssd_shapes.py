"""Train a small SSD on synthetic shapes with ``paddle_ssd_op.ssd_loss``.

The data set is drawn on the fly: rectangles, ellipses and triangles (3 classes, plus the
background class 0) of random size and colour on noisy backgrounds, 0 to 5 objects per image
(images without objects included). The network is a few convolutions with detection heads on
three scales; its priors come from ``paddle.vision.ops.prior_box``. After training, the held-out
images are decoded with ``paddle.vision.ops.box_coder`` and class-wise NMS, and the VOC-style
mAP@0.5 is printed.

    python examples/train_ssd_shapes.py                 # dygraph, the full run (docs/migration.md)
    python examples/train_ssd_shapes.py --static        # a static program fed with LoDTensors
    python examples/train_ssd_shapes.py --quick         # a short run (make demo)
    python -m paddle.distributed.launch --nproc_per_node 2 examples/train_ssd_shapes.py
                                                        # data parallel: the batch split in two

Outputs, in --out-dir (default ./ssd_shapes_output): loss_curve.png, detections.png (held-out
images with the predicted boxes) and model.pdparams.

Data parallel: every process draws the same global batch (same seed) and trains on its share.
The op normalizes by the positives it sees, which differ between processes, so the example asks
for the unnormalized rows (``normalization='none'``), all-reduces the batch's positive count
(``return_targets=True`` gives it) and divides by it: the gradient is exactly that of one
process on the global batch (tests/test_distributed.py checks it).
"""
import zlib  # noqa: F401  -- must precede paddle: paddle 2.6.2 exports a zlib that crashes Python's
import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("GLOG_minloglevel", "2")  # keep Paddle's executor INFO lines out

import numpy as np
import paddle
import paddle.nn.functional as F
from tqdm import tqdm

import paddle_ssd_op

CLASSES = ("background", "rectangle", "ellipse", "triangle")
NUM_CLASSES = len(CLASSES)
VARIANCE = [0.1, 0.1, 0.2, 0.2]
MEAN, STD = 0.5, 0.25  # image normalization
EVAL_SEED = 10 ** 6  # the held-out images use seeds from here on; training seeds are smaller


# ------------------------------------------------------------------------------------------------
# data: shapes on noisy backgrounds, drawn on the fly
# ------------------------------------------------------------------------------------------------
def draw_image(rng, size=64, max_objects=5):
    """One image [3, size, size] float32 in [0, 1], its gt boxes [n, 4] (xmin, ymin, xmax, ymax,
    normalized to [0, 1], tight around the drawn pixels) and labels [n] (1..3)."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    background = rng.uniform(0.1, 0.9, (3, 1, 1))
    slope = rng.uniform(-0.3, 0.3, (2, 3, 1, 1))
    image = background + slope[0] * xx + slope[1] * yy + rng.normal(0, 0.08, (3, size, size))
    boxes, labels = [], []
    for _ in range(rng.integers(0, max_objects + 1)):
        for _attempt in range(20):
            w, h = rng.integers(int(0.2 * size), int(0.55 * size) + 1, 2)
            x0, y0 = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
            box = np.array([x0, y0, x0 + w, y0 + h])
            if all(_overlap_of_smaller(box, b * size) < 0.1 for b in boxes):
                break
        else:
            continue
        label = int(rng.integers(1, NUM_CLASSES))
        mask = _shape_mask(rng, label, w, h)
        ys, xs = np.nonzero(mask)
        patch = image[:, y0:y0 + h, x0:x0 + w]
        colour = rng.uniform(0, 1, 3)
        while np.abs(colour - patch[:, ys, xs].mean(axis=1)).max() < 0.35:  # visible
            colour = rng.uniform(0, 1, 3)
        patch[:, ys, xs] = colour[:, None] + rng.normal(0, 0.05, (3, len(xs)))
        boxes.append(np.array([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1,
                               y0 + ys.max() + 1]) / size)
        labels.append(label)
    return (np.clip(image, 0, 1).astype("float32"), np.array(boxes, "float32").reshape(-1, 4),
            np.array(labels, "int32"))


def _shape_mask(rng, label, w, h):
    """The pixels [h, w] of a shape filling a w x h box (at least its middle row and column)."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5  # pixel centres
    if label == 1:  # rectangle
        return np.ones((h, w), bool)
    if label == 2:  # ellipse
        return ((2 * xx / w - 1) ** 2 + (2 * yy / h - 1) ** 2) <= 1
    # triangle: one side along an edge of the box, the opposite corner on the far edge
    t = rng.uniform(0, 1)
    corners = {0: [(t * w, 0), (0, h), (w, h)],    # apex up
               1: [(t * w, h), (w, 0), (0, 0)],    # apex down
               2: [(0, t * h), (w, h), (w, 0)],    # apex left
               3: [(w, t * h), (0, 0), (0, h)]}    # apex right
    p = corners[int(rng.integers(4))]
    side = [(xx - p[i][0]) * (p[(i + 1) % 3][1] - p[i][1])
            - (yy - p[i][1]) * (p[(i + 1) % 3][0] - p[i][0]) for i in range(3)]
    return (((side[0] >= 0) & (side[1] >= 0) & (side[2] >= 0))
            | ((side[0] <= 0) & (side[1] <= 0) & (side[2] <= 0)))


def _overlap_of_smaller(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def make_batch(seed, batch_size, size):
    """The global batch of training step `seed` (the same in every process): normalized images
    [B, 3, S, S], and per image its gt boxes and labels."""
    rng = np.random.default_rng(seed)
    drawn = [draw_image(rng, size) for _ in range(batch_size)]
    images = (np.stack([d[0] for d in drawn]) - MEAN) / STD
    return images.astype("float32"), [d[1] for d in drawn], [d[2] for d in drawn]


def training_batches(args):
    """The global batches of the training steps, each drawn by a background thread while the
    previous step trains."""
    seeds = [args.seed * 100003 + step for step in range(args.steps)]
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(make_batch, seeds[0], args.batch_size, args.image_size)
        for step in range(args.steps):
            batch = pending.result()
            if step + 1 < args.steps:
                pending = pool.submit(make_batch, seeds[step + 1], args.batch_size,
                                      args.image_size)
            yield batch


def flat_gt(boxes, labels):
    """Per-image lists -> the [Ng, 4] boxes, [Ng, 1] labels and boxes per image (the LoD)."""
    lengths = [len(b) for b in boxes]
    return (np.concatenate(boxes).reshape(-1, 4), np.concatenate(labels).reshape(-1, 1).astype("int32"),
            lengths)


# ------------------------------------------------------------------------------------------------
# the network
# ------------------------------------------------------------------------------------------------
# (feature map stride, min_size, max_size) of the detection heads, in pixels of a 64 x 64 image;
# every cell has 4 priors: aspect ratios 1, 2 and 1/2 at min_size, and 1 at sqrt(min_size * max_size)
HEADS = ((8, 12.0, 20.0), (16, 20.0, 30.0), (32, 30.0, 44.0))
PRIORS_PER_CELL = 4


class ShapesSSD(paddle.nn.Layer):
    """A small SSD: 3x3 convolutions (with GroupNorm) down to stride 32, and a 3x3 location head
    and confidence head on the stride 8, 16 and 32 feature maps. Returns location [N, Np, 4], confidence
    [N, Np, C], and the priors and variances [Np, 4] of paddle.vision.ops.prior_box."""

    def __init__(self, image_size=64, num_classes=NUM_CLASSES):
        super().__init__()
        self.scale = image_size / 64.0
        self.num_classes = num_classes
        conv = paddle.nn.Conv2D
        # (in, out, stride): strides 2, 2, 4, 8, 16, 32
        spec = ((3, 16, 2), (16, 32, 1), (32, 64, 2), (64, 64, 2), (64, 64, 2), (64, 64, 2))
        self.backbone = paddle.nn.LayerList([conv(i, o, 3, s, 1) for i, o, s in spec])
        # GroupNorm, not BatchNorm: it normalizes each image alone, so splitting the batch over
        # processes (data parallel) changes nothing
        self.norms = paddle.nn.LayerList([paddle.nn.GroupNorm(8, o) for _, o, _ in spec])
        k = PRIORS_PER_CELL
        self.loc = paddle.nn.LayerList([conv(64, k * 4, 3, padding=1) for _ in HEADS])
        self.conf = paddle.nn.LayerList([conv(64, k * num_classes, 3, padding=1) for _ in HEADS])

    def forward(self, image):
        features, x, stride = {}, image, 1
        for layer, norm in zip(self.backbone, self.norms):
            stride *= layer._stride[0]
            x = F.relu(norm(layer(x)))
            features[stride] = x
        locs, confs, priors, variances = [], [], [], []
        for i, (stride, min_size, max_size) in enumerate(HEADS):
            x = features[stride]
            box, var = paddle.vision.ops.prior_box(
                x, image, min_sizes=[min_size * self.scale], max_sizes=[max_size * self.scale],
                aspect_ratios=[2.0], variance=VARIANCE, flip=True, clip=True)
            locs.append(paddle.reshape(paddle.transpose(self.loc[i](x), [0, 2, 3, 1]), [0, -1, 4]))
            confs.append(paddle.reshape(paddle.transpose(self.conf[i](x), [0, 2, 3, 1]),
                                        [0, -1, self.num_classes]))
            priors.append(paddle.reshape(box, [-1, 4]))
            variances.append(paddle.reshape(var, [-1, 4]))
        return (paddle.concat(locs, axis=1), paddle.concat(confs, axis=1),
                paddle.concat(priors), paddle.concat(variances))


# ------------------------------------------------------------------------------------------------
# the loss
# ------------------------------------------------------------------------------------------------
def ssd_objective(outputs, gt_box, gt_label, gt_lengths, world_size=1):
    """The training objective: the batch's summed SSD loss divided by its positives.

    One process: ``paddle.sum`` of the op's rows (fluid's normalization, by the batch's positive
    count). Data parallel: each process sees only its share of the positives, so it takes the
    unnormalized rows and divides by the positives of the whole global batch (all-reduced); the
    factor world_size undoes the averaging of gradients by paddle.DataParallel. Returns
    (objective to backpropagate, the global batch's loss for logging)."""
    location, confidence, prior_box, prior_box_var = outputs
    if world_size == 1:
        loss = paddle_ssd_op.ssd_loss(location, confidence, gt_box, gt_label, prior_box,
                                      prior_box_var, gt_lengths=gt_lengths)
        objective = paddle.sum(loss)
        return objective, objective.detach()
    rows, targets = paddle_ssd_op.ssd_loss(location, confidence, gt_box, gt_label, prior_box,
                                           prior_box_var, gt_lengths=gt_lengths,
                                           normalization="none", return_targets=True)
    positives = targets["num_positives"].astype(location.dtype)
    paddle.distributed.all_reduce(positives)                   # positives of the global batch
    positives = paddle.clip(positives, min=1.0)                # the op's clamp: never 0/0
    objective = paddle.sum(rows) / positives * world_size
    global_loss = objective.detach() / world_size
    paddle.distributed.all_reduce(global_loss)                 # sum over processes
    return objective, global_loss


# ------------------------------------------------------------------------------------------------
# detection and mAP
# ------------------------------------------------------------------------------------------------
def detect(location, confidence, prior_box, prior_box_var, score_threshold=0.05,
           nms_threshold=0.45, keep_top_k=50):
    """Dygraph tensors of a batch -> per image an array [k, 6]: class, score, xmin, ymin, xmax,
    ymax (normalized), after class-wise NMS."""
    boxes = paddle.vision.ops.box_coder(prior_box, prior_box_var, location,
                                        code_type="decode_center_size", box_normalized=True)
    boxes = paddle.clip(boxes, 0.0, 1.0)
    scores = F.softmax(confidence, axis=-1)
    results = []
    for b, s in zip(boxes, scores):
        s = s[:, 1:]                                        # drop the background class
        prior_idx, cls_idx = paddle.nonzero(s > score_threshold, as_tuple=True)
        if prior_idx.shape[0] == 0:
            results.append(np.zeros((0, 6), "float32"))
            continue
        prior_idx, cls_idx = prior_idx.flatten(), cls_idx.flatten()
        cand_boxes = paddle.gather(b, prior_idx)
        cand_scores = paddle.gather_nd(s, paddle.stack([prior_idx, cls_idx], axis=1))
        keep = paddle.vision.ops.nms(cand_boxes, nms_threshold, scores=cand_scores,
                                     category_idxs=cls_idx,
                                     categories=list(range(NUM_CLASSES - 1)),
                                     top_k=min(keep_top_k, int(prior_idx.shape[0])))
        keep = keep.numpy().reshape(-1)
        results.append(np.concatenate(
            [cls_idx.numpy()[keep, None] + 1.0, cand_scores.numpy()[keep, None],
             cand_boxes.numpy()[keep]], axis=1).astype("float32"))
    return results


def iou_matrix(a, b):
    """IoU of every box of a [n, 4] with every box of b [m, 4]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def voc_ap(recall, precision):
    """Area under the precision/recall curve, precision made monotone (VOC 2010+, all points)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    changed = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[changed + 1] - r[changed]) * p[changed + 1]))


def mean_average_precision(detections, gt_boxes, gt_labels, iou_threshold=0.5):
    """VOC-style mAP@iou_threshold: per class, detections of all images sorted by score; one is
    a true positive when its best IoU with a gt of its class and image is >= the threshold and
    that gt was not claimed by a higher-scored detection. Returns (mAP, {class name: AP})."""
    aps = {}
    for c in range(1, NUM_CLASSES):
        gts = [boxes[labels == c] for boxes, labels in zip(gt_boxes, gt_labels)]
        claimed = [np.zeros(len(g), bool) for g in gts]
        dets = [(d[1], i, d[2:]) for i, image_dets in enumerate(detections)
                for d in image_dets if int(d[0]) == c]
        dets.sort(key=lambda d: -d[0])
        tp = np.zeros(len(dets))
        for k, (_, i, box) in enumerate(dets):
            if len(gts[i]):
                ious = iou_matrix(box[None], gts[i])[0]
                j = int(np.argmax(ious))
                if ious[j] >= iou_threshold and not claimed[i][j]:
                    tp[k], claimed[i][j] = 1, True
        n_gt = sum(len(g) for g in gts)
        if n_gt == 0:
            continue
        tp_cum = np.cumsum(tp)
        recall = tp_cum / n_gt
        precision = tp_cum / np.arange(1, len(dets) + 1)
        aps[CLASSES[c]] = voc_ap(recall, precision)
    return float(np.mean(list(aps.values()))), aps


def evaluate(model, images, gt_boxes, gt_labels, batch_size=50):
    """Detections and mAP@0.5 of a dygraph model on the held-out images."""
    model.eval()
    detections = []
    with paddle.no_grad():
        for start in range(0, len(images), batch_size):
            outputs = model(paddle.to_tensor(images[start:start + batch_size]))
            detections.extend(detect(*outputs))
    model.train()
    mean_ap, aps = mean_average_precision(detections, gt_boxes, gt_labels)
    return detections, mean_ap, aps


def held_out(num_images, size):
    images, boxes, labels = [], [], []
    for i in range(num_images):
        image, b, l = draw_image(np.random.default_rng(EVAL_SEED + i), size)
        images.append((image - MEAN) / STD)
        boxes.append(b)
        labels.append(l)
    return np.stack(images).astype("float32"), boxes, labels


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
def learning_rate(args):
    """Linear warm-up, then cosine decay to 2% of the peak."""
    warmup = max(1, min(50, args.steps // 10))
    cosine = paddle.optimizer.lr.CosineAnnealingDecay(args.lr, T_max=max(1, args.steps - warmup),
                                                      eta_min=args.lr * 0.02)
    return paddle.optimizer.lr.LinearWarmup(cosine, warmup, args.lr * 0.1, args.lr)


def train_dygraph(args, rank, world_size, on_step):
    paddle.seed(args.seed)
    model = ShapesSSD(args.image_size)
    net = paddle.DataParallel(model) if world_size > 1 else model
    schedule = learning_rate(args)
    optimizer = paddle.optimizer.Adam(schedule, parameters=model.parameters())
    share = args.batch_size // world_size
    for step, (images, boxes, labels) in enumerate(training_batches(args)):
        mine = slice(rank * share, (rank + 1) * share)
        gt_box, gt_label, lengths = flat_gt(boxes[mine], labels[mine])
        outputs = net(paddle.to_tensor(images[mine]))
        objective, loss = ssd_objective(outputs, paddle.to_tensor(gt_box),
                                        paddle.to_tensor(gt_label), lengths, world_size)
        objective.backward()
        grads = ({p.name: p.grad.numpy() for p in model.parameters()}
                 if args.dump and step == 0 else None)
        optimizer.step()
        optimizer.clear_grad()
        schedule.step()
        on_step(step, float(loss), grads)
    return model


def train_static(args, on_step):
    """The same training as a static program: gt_box and gt_label are fed as LoDTensors whose
    LoD gives the boxes of each image (as in fluid 1.8). Returns a dygraph copy of the trained
    model for the evaluation."""
    paddle.enable_static()
    paddle.seed(args.seed)
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        image = paddle.static.data("image", [None, 3, args.image_size, args.image_size], "float32")
        gt_box = paddle.static.data("gt_box", [None, 4], "float32", lod_level=1)
        gt_label = paddle.static.data("gt_label", [None, 1], "int32", lod_level=1)
        model = ShapesSSD(args.image_size)
        location, confidence, prior_box, prior_box_var = model(image)
        loss = paddle.sum(paddle_ssd_op.ssd_loss(location, confidence, gt_box, gt_label,
                                                 prior_box, prior_box_var))
        schedule = learning_rate(args)
        paddle.optimizer.Adam(schedule).minimize(loss)
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    exe.run(startup)
    for step, (images, boxes, labels) in enumerate(training_batches(args)):
        boxes, labels, lengths = flat_gt(boxes, labels)
        feed = {"image": images,
                "gt_box": paddle.base.create_lod_tensor(boxes, [lengths], place),
                "gt_label": paddle.base.create_lod_tensor(labels, [lengths], place)}
        value, = exe.run(main, feed=feed, fetch_list=[loss])
        schedule.step()
        on_step(step, float(np.asarray(value)), None)
    scope = paddle.static.global_scope()
    weights = [np.array(scope.find_var(p.name).get_tensor()) for p in model.parameters()]
    paddle.disable_static()
    trained = ShapesSSD(args.image_size)
    for p, w in zip(trained.parameters(), weights):
        p.set_value(w)
    return trained


# ------------------------------------------------------------------------------------------------
# pictures
# ------------------------------------------------------------------------------------------------
def save_loss_curve(losses, path, title=""):
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.asarray(losses)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, lw=0.6, alpha=0.4, label="loss per step")
    window = max(1, len(losses) // 25)
    if len(losses) >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window - 1, len(losses)), smooth, lw=2, label=f"mean of {window} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("SSD loss (per positive prior)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks([t for t in (1, 2, 3, 4, 6, 8, 10, 15, 20, 30) if
                   losses.min() * 0.8 <= t <= losses.max() * 1.2] or [losses.min()])
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_detections(images, detections, gt_boxes, path, score_threshold=0.4, count=12):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {1: "tab:red", 2: "tab:blue", 3: "tab:green"}
    cols = 6
    rows = (min(count, len(images)) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows))
    for k, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if k >= min(count, len(images)):
            continue
        image = np.clip(images[k].transpose(1, 2, 0) * STD + MEAN, 0, 1)
        size = image.shape[0]
        ax.imshow(image, extent=(0, 1, 1, 0))
        for box in gt_boxes[k]:
            ax.add_patch(plt.Rectangle(box[:2], *(box[2:] - box[:2]), fill=False, ec="white",
                                       lw=1, ls="--"))
        for cls, score, *box in detections[k]:
            if score < score_threshold:
                continue
            box = np.array(box)
            ax.add_patch(plt.Rectangle(box[:2], *(box[2:] - box[:2]), fill=False,
                                       ec=colours[int(cls)], lw=1.8))
            ax.text(box[0], box[1] - 0.01, f"{CLASSES[int(cls)][:4]} {score:.2f}",
                    color="white", fontsize=6, va="bottom",
                    bbox=dict(fc=colours[int(cls)], ec="none", pad=0.5))
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)
        ax.set_title(f"held-out {k} ({size}x{size})", fontsize=7)
    fig.suptitle(f"detections with score >= {score_threshold} (dashed white: ground truth)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--static", action="store_true",
                        help="train a static program fed with LoDTensors (default: dygraph)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 150 steps, 100 held-out images")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 1200)")
    parser.add_argument("--batch-size", type=int, default=16, help="the global batch")
    parser.add_argument("--lr", type=float, default=6e-3, help="peak Adam learning rate")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--eval-images", type=int, default=None,
                        help="held-out images for the mAP (default 500; 0: no evaluation)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out-dir", default="ssd_shapes_output")
    parser.add_argument("--no-plots", action="store_true", help="write no PNG")
    parser.add_argument("--dump", default=None,
                        help="(tests) save the losses, the first-step gradients and the trained "
                             "parameters to this .npz")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of the op in each process (default: cores / processes)")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 150 if args.quick else 1200
    if args.eval_images is None:
        args.eval_images = 100 if args.quick else 500
    return args


def main(argv=None):
    args = parse_args(argv)
    world_size = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
    rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
    threads = args.threads or max(1, (os.cpu_count() or 1) // world_size)
    paddle.set_device("cpu")
    paddle_ssd_op.set_num_threads(threads)
    if world_size > 1:
        if args.static:
            sys.exit("--static runs in one process; data parallel training is dygraph only")
        if args.batch_size % world_size:
            sys.exit(f"--batch-size {args.batch_size} must be a multiple of the {world_size} "
                     "processes")
        paddle.distributed.init_parallel_env()
    lead = rank == 0
    if lead:
        print(f"paddle {paddle.__version__}, {'static' if args.static else 'dygraph'}, "
              f"{world_size} process(es), {args.steps} steps of "
              f"{args.batch_size} images {args.image_size}x{args.image_size}", flush=True)

    losses, first_grads = [], {}
    bar = tqdm(total=args.steps, disable=not lead, unit="step", dynamic_ncols=True)
    running = None

    def on_step(step, loss, grads):
        nonlocal running
        losses.append(loss)
        if grads is not None:
            first_grads.update(grads)
        running = loss if running is None else 0.95 * running + 0.05 * loss
        bar.set_postfix(loss=f"{running:.3f}", refresh=False)
        bar.update(1)

    start = time.perf_counter()
    if args.static:
        model = train_static(args, on_step)
    else:
        model = train_dygraph(args, rank, world_size, on_step)
    bar.close()
    train_seconds = time.perf_counter() - start
    if args.dump and lead:
        np.savez(args.dump, losses=np.array(losses),
                 **{"grad/" + k: v for k, v in first_grads.items()},
                 **{"param/" + p.name: p.numpy() for p in model.parameters()})
    if not lead:
        return
    print(f"trained in {train_seconds:.0f} s; loss {np.mean(losses[:10]):.3f} (first 10 steps) "
          f"-> {np.mean(losses[-10:]):.3f} (last 10)", flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    paddle.save(model.state_dict(), os.path.join(args.out_dir, "model.pdparams"))
    if not args.no_plots:
        save_loss_curve(losses, os.path.join(args.out_dir, "loss_curve.png"),
                        f"{'static' if args.static else 'dygraph'}, {world_size} process(es), "
                        f"batch {args.batch_size}, Adam lr {args.lr:g}, paddle {paddle.__version__}")
    if args.eval_images > 0:
        images, gt_boxes, gt_labels = held_out(args.eval_images, args.image_size)
        detections, mean_ap, aps = evaluate(model, images, gt_boxes, gt_labels)
        if not args.no_plots:
            save_detections(images, detections, gt_boxes,
                            os.path.join(args.out_dir, "detections.png"))
        print(f"mAP@0.5 on {args.eval_images} held-out images: {mean_ap:.3f} ("
              + ", ".join(f"{k} {v:.3f}" for k, v in aps.items()) + ")")
    if not args.no_plots:
        print(f"wrote {args.out_dir}/loss_curve.png"
              + (f" and {args.out_dir}/detections.png" if args.eval_images > 0 else ""))


if __name__ == "__main__":
    main()
