"""MobileNet-SSD 300x300 as the fluid 1.8 program of PaddlePaddle/models (PaddleCV/ssd,
mobilenet_ssd.py, release/1.8) builds it: MobileNet v1 (conv + batch norm, depthwise separable
blocks), four extra blocks, and ``fluid.layers.multi_box_head`` on six feature maps (19x19 down
to 1x1; 1917 priors). Rewritten here (same layers, same arguments, same creation order) so that
this repository holds the fluid side of the migration; run with fluid 1.8.5 (Python 3.7).
"""
import paddle.fluid as fluid
from paddle.fluid.initializer import MSRA
from paddle.fluid.param_attr import ParamAttr


def conv_bn(input, filter_size, num_filters, stride, padding, num_groups=1, act="relu"):
    """Convolution without bias (MSRA init, learning rate x0.1), then batch norm."""
    conv = fluid.layers.conv2d(
        input=input, num_filters=num_filters, filter_size=filter_size, stride=stride,
        padding=padding, groups=num_groups, act=None,
        param_attr=ParamAttr(learning_rate=0.1, initializer=MSRA()), bias_attr=False)
    return fluid.layers.batch_norm(input=conv, act=act)


def depthwise_separable(input, num_filters1, num_filters2, num_groups, stride):
    depthwise = conv_bn(input, 3, num_filters1, stride, 1, num_groups=num_groups)
    return conv_bn(depthwise, 1, num_filters2, 1, 0)


def extra_block(input, num_filters1, num_filters2, stride):
    pointwise = conv_bn(input, 1, num_filters1, 1, 0)
    return conv_bn(pointwise, 3, num_filters2, stride, 1)


def mobilenet_ssd(image, num_classes, image_shape):
    """(mbox_locs [N, 1917, 4], mbox_confs [N, 1917, C], boxes [1917, 4], variances [1917, 4])."""
    x = conv_bn(image, 3, 32, 2, 1)                      # 150x150
    x = depthwise_separable(x, 32, 64, 32, 1)
    x = depthwise_separable(x, 64, 128, 64, 2)           # 75x75
    x = depthwise_separable(x, 128, 128, 128, 1)
    x = depthwise_separable(x, 128, 256, 128, 2)         # 38x38
    x = depthwise_separable(x, 256, 256, 256, 1)
    x = depthwise_separable(x, 256, 512, 256, 2)         # 19x19
    for _ in range(5):
        x = depthwise_separable(x, 512, 512, 512, 1)
    module11 = x
    x = depthwise_separable(x, 512, 1024, 512, 2)        # 10x10
    module13 = depthwise_separable(x, 1024, 1024, 1024, 1)
    module14 = extra_block(module13, 256, 512, 2)        # 5x5
    module15 = extra_block(module14, 128, 256, 2)        # 3x3
    module16 = extra_block(module15, 128, 256, 2)        # 2x2
    module17 = extra_block(module16, 64, 128, 2)         # 1x1
    return fluid.layers.multi_box_head(
        inputs=[module11, module13, module14, module15, module16, module17],
        image=image, num_classes=num_classes, min_ratio=20, max_ratio=90,
        min_sizes=[60.0, 105.0, 150.0, 195.0, 240.0, 285.0],
        max_sizes=[[], 150.0, 195.0, 240.0, 285.0, 300.0],
        aspect_ratios=[[2.], [2., 3.], [2., 3.], [2., 3.], [2., 3.], [2., 3.]],
        base_size=image_shape[2], offset=0.5, flip=True)
