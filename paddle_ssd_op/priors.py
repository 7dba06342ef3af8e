"""SSD300 prior boxes (VOC settings), made with Paddle's own prior_box operator."""
import numpy as np
import paddle

# (feature map size, step, min size, max size, aspect ratios) of the six SSD300 heads.
SSD300_HEADS = (
    (38, 8, 30.0, 60.0, (2.0,)),
    (19, 16, 60.0, 111.0, (2.0, 3.0)),
    (10, 32, 111.0, 162.0, (2.0, 3.0)),
    (5, 64, 162.0, 213.0, (2.0, 3.0)),
    (3, 100, 213.0, 264.0, (2.0,)),
    (1, 300, 264.0, 315.0, (2.0,)),
)
SSD300_VARIANCE = (0.1, 0.1, 0.2, 0.2)


def ssd300_priors(dtype="float32"):
    """The 8732 SSD300 priors and their variances, as NumPy arrays of shape [8732, 4]."""
    was_static = not paddle.in_dynamic_mode()
    paddle.disable_static()
    try:
        image = paddle.zeros([1, 3, 300, 300])
        boxes, variances = [], []
        for size, step, min_size, max_size, ratios in SSD300_HEADS:
            feature = paddle.zeros([1, 1, size, size])
            box, var = paddle.vision.ops.prior_box(
                feature, image, min_sizes=[min_size], max_sizes=[max_size],
                aspect_ratios=list(ratios), variance=list(SSD300_VARIANCE), flip=True, clip=True,
                steps=[float(step), float(step)], offset=0.5, min_max_aspect_ratios_order=True)
            boxes.append(box.numpy().reshape(-1, 4))
            variances.append(var.numpy().reshape(-1, 4))
    finally:
        if was_static:
            paddle.enable_static()
    return np.concatenate(boxes).astype(dtype), np.concatenate(variances).astype(dtype)
