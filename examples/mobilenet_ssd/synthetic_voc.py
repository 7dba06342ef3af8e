"""A small synthetic VOC-like data set, made on the fly: the stand-in for PaddleCV/ssd's reader.py.

Images are 3 x 300 x 300, mean-subtracted and scaled as the original reader does
((pixel - 127.5) * 0.007843), with 0 to 5 filled rectangles each on a noisy background. There
are 20 object classes (1..20; 0 is the background, as in Pascal VOC); a rectangle's class sets
its colour. About one gt box in six is marked difficult. Boxes are normalized
(xmin, ymin, xmax, ymax) in [0, 1].

Plain NumPy (``RandomState``, whose streams are the same on every NumPy version), also imported
by the fluid 1.8 program under Python 3.7, so both programs see bit-identical batches.
"""
import numpy as np

NUM_CLASSES = 21  # 20 object classes + background 0, as Pascal VOC
IMAGE_SHAPE = [3, 300, 300]
# one colour per class (RGB in [0, 255]), fixed
_COLOURS = np.random.RandomState(1234).uniform(0, 255, (NUM_CLASSES, 3))


def make_image(rng, min_boxes=0, max_boxes=5):
    """One sample: image [3, 300, 300] float32, boxes [n, 4] float32, labels [n, 1] int32,
    difficult [n, 1] int32, n in [min_boxes, max_boxes]."""
    _, height, width = IMAGE_SHAPE
    image = rng.uniform(60, 200, (3, 1, 1)) + rng.normal(0, 20, (3, height, width))
    count = rng.randint(min_boxes, max_boxes + 1)
    boxes, labels, difficult = [], [], []
    for _ in range(count):
        w, h = rng.uniform(0.1, 0.6, 2)
        x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        label = rng.randint(1, NUM_CLASSES)
        c0, r0 = int(round(x0 * width)), int(round(y0 * height))
        c1, r1 = int(round((x0 + w) * width)), int(round((y0 + h) * height))
        image[:, r0:r1, c0:c1] = _COLOURS[label][:, None, None] + rng.normal(0, 10, (3, 1, 1))
        boxes.append([c0 / width, r0 / height, c1 / width, r1 / height])
        labels.append([label])
        difficult.append([int(rng.uniform() < 1.0 / 6)])
    image = ((np.clip(image, 0, 255) - 127.5) * 0.007843).astype("float32")
    return (image, np.array(boxes, "float32").reshape(-1, 4),
            np.array(labels, "int32").reshape(-1, 1), np.array(difficult, "int32").reshape(-1, 1))


def make_batch(seed, batch_size, min_boxes=0):
    """The batch of a seed: images [N, 3, 300, 300] and the concatenated boxes, labels and
    difficult flags with ``lengths`` (the boxes of each image, fluid's LoD)."""
    rng = np.random.RandomState(seed)
    samples = [make_image(rng, min_boxes) for _ in range(batch_size)]
    return {"image": np.stack([s[0] for s in samples]),
            "gt_box": np.concatenate([s[1] for s in samples]),
            "gt_label": np.concatenate([s[2] for s in samples]),
            "difficult": np.concatenate([s[3] for s in samples]),
            "lengths": [len(s[1]) for s in samples]}


def reverse_batch(batch):
    """The same batch with its images in reverse order (fluid's own rounding spread)."""
    bounds = np.cumsum([0] + batch["lengths"])
    order = range(len(batch["lengths"]) - 1, -1, -1)
    rows = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in order]).astype(int)
    return {"image": batch["image"][::-1].copy(), "gt_box": batch["gt_box"][rows],
            "gt_label": batch["gt_label"][rows], "difficult": batch["difficult"][rows],
            "lengths": batch["lengths"][::-1]}


def deterministic_value(index, shape):
    """The value of the ``index``-th trainable parameter (creation order) in the parity runs:
    a seeded formula, so no parameter file is needed. 1-D parameters (batch-norm scale and
    shift, head biases) in [0.8, 1.2]; weights MSRA-like, normal with std sqrt(2 / fan_in)."""
    rng = np.random.RandomState(10007 + index)
    shape = list(shape)
    if len(shape) == 1:
        return rng.uniform(0.8, 1.2, shape).astype("float32")
    fan_in = int(np.prod(shape[1:]))
    return (rng.normal(0, 1, shape) * np.sqrt(2.0 / fan_in)).astype("float32")


def sample_indices(index, size, count=256):
    """The fixed entries of the ``index``-th parameter whose gradients the parity data keeps."""
    rng = np.random.RandomState(20011 + index)
    return np.sort(rng.choice(size, min(size, count), replace=False))
