"""fluid 1.8.5's ``multi_box_head`` for static programs (Paddle 3.3 PIR, Paddle 2.6 legacy IR) and
``MultiBoxHead``, the same head as a dygraph ``nn.Layer``.

Both share one implementation: the prior and size rules of fluid's Python layer are resolved once
(``_prior_layers``) and the head is computed by ``MultiBoxHead.forward`` from Paddle's built-in
operators only (prior_box, conv2d, transpose, reshape, concat), so an inference model saved with
it runs in Paddle Inference without this package.
"""
import zlib  # noqa: F401  -- must precede paddle: paddle 2.6.2 exports a zlib that crashes Python's

import math
from typing import List, NamedTuple

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from ._args import as_bool, as_float32, as_int, dtype_name, is_tensor

__all__ = ["multi_box_head", "MultiBoxHead"]

# fluid's prior_box op (ExpandAspectRatios) drops an aspect ratio within this of one already kept.
_RATIO_EPSILON = np.float32(1e-6)
_FLOAT_DTYPES = ("float32", "float64")


class _PriorLayer(NamedTuple):
    """The prior_box settings of one input, as fluid's multi_box_head passes them to the op."""

    min_sizes: List[float]
    max_sizes: List[float]          # [] = no max-size box on this layer
    aspect_ratios: List[float]      # as given: the op adds 1.0, drops duplicates and flips
    steps: List[float]              # [step_w, step_h]; a 0 makes the op use image / map size
    num_boxes: int                  # priors per cell: the conv filters are num_boxes * 4 (* C)


# ---------------------------------------------------------------------------------------------
# scalar arguments


def _as_positive_float32(name, value):
    result = as_float32(name, value)
    if not result > 0:
        raise ValueError(f"{name}: expected a number > 0, received {value!r}")
    return result


def _as_list(name, value, length=None, what="a list or tuple"):
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name}: expected {what}, received {type(value).__name__} {value!r}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name}: expected {length} entries (one per input), received "
                         f"{len(value)}: {list(value)!r}")
    return list(value)


def _entry_list(value):
    """One layer's entry of min_sizes/max_sizes/aspect_ratios: a number or a list of them."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return list(value) if isinstance(value, (list, tuple)) else [value]


# ---------------------------------------------------------------------------------------------
# fluid's prior rules, resolved once per head


def _sizes_from_ratios(num_layers, base_size, min_ratio, max_ratio):
    """fluid's min_ratio/max_ratio rule (more than 2 inputs, neither size list given)."""
    for name, ratio in (("min_ratio", min_ratio), ("max_ratio", max_ratio)):
        if ratio is None:
            raise ValueError(f"{name}: expected an int (with more than 2 inputs and no "
                             f"min_sizes/max_sizes the sizes come from min_ratio and max_ratio), "
                             f"received None")
        as_int(name, ratio, minimum=-2**31)
    if min_ratio < 1:
        raise ValueError(f"min_ratio: expected an int >= 1 (a percentage of base_size), "
                         f"received {min_ratio}")
    if max_ratio - min_ratio < num_layers - 2:
        raise ValueError(f"max_ratio: expected max_ratio - min_ratio >= len(inputs) - 2 = "
                         f"{num_layers - 2} (fluid's step, (max_ratio - min_ratio) // "
                         f"(len(inputs) - 2), must be >= 1), received min_ratio={min_ratio}, "
                         f"max_ratio={max_ratio}")
    # fluid's arithmetic verbatim (a true division, then floor); the list may be longer than the
    # number of inputs, the extra entries are ignored.
    step = int(math.floor((max_ratio - min_ratio) / (num_layers - 2)))
    min_sizes = [base_size * .10]
    max_sizes = [base_size * .20]
    for ratio in range(min_ratio, max_ratio + 1, step):
        min_sizes.append(base_size * ratio / 100.)
        max_sizes.append(base_size * (ratio + step) / 100.)
    for i, size in enumerate(max_sizes[:num_layers]):  # the largest of each used layer
        with np.errstate(over="ignore"):
            if not np.isfinite(np.float32(size)):
                raise ValueError(f"base_size: expected base_size * (ratio + step) / 100 (the "
                                 f"max size of inputs[{i}]) to be a finite float32, received "
                                 f"base_size={base_size!r}, min_ratio={min_ratio}, "
                                 f"max_ratio={max_ratio}")
    return min_sizes, max_sizes


def _layer_sizes(i, min_entry, max_entry):
    """One layer's (min sizes, max sizes) as float32, fluid's `[]`/`<= 0` max entries dropped."""
    min_sizes = [_as_positive_float32(f"min_sizes[{i}]", v) for v in _entry_list(min_entry)]
    if not min_sizes:
        raise ValueError(f"min_sizes[{i}]: expected at least one size, received {min_entry!r}")
    max_values = [as_float32(f"max_sizes[{i}]", v) for v in _entry_list(max_entry)]
    # fluid's prior_box layer: an empty entry, or one whose first value is <= 0, means no
    # max-size box on this layer (the other values are then ignored).
    if not max_values or not max_values[0] > 0:
        return min_sizes, []
    if len(max_values) != len(min_sizes):
        raise ValueError(f"max_sizes[{i}]: expected {len(min_sizes)} sizes (one per min size "
                         f"{[float(v) for v in min_sizes]}), [] or a value <= 0, received "
                         f"{max_entry!r}")
    for low, high in zip(min_sizes, max_values):
        if not high > low:
            raise ValueError(f"max_sizes[{i}]: expected sizes > the min sizes "
                             f"{[float(v) for v in min_sizes]}, received {max_entry!r}")
    return min_sizes, max_values


def _layer_ratios(i, entry):
    ratios = []
    for value in _entry_list(entry):
        ratio = _as_positive_float32(f"aspect_ratios[{i}]", value)
        if not np.isfinite(np.float32(1.0) / ratio):
            raise ValueError(f"aspect_ratios[{i}]: expected ratios whose inverse is a finite "
                             f"float32, received {value!r}")
        ratios.append(ratio)
    return ratios


def _expanded_ratio_count(ratios, flip):
    """How many ratios fluid's ExpandAspectRatios keeps: 1.0, then each new ratio (and 1/ratio
    with flip), in float32 as the op."""
    kept = [np.float32(1.0)]
    for ratio in ratios:
        if all(abs(ratio - k) >= _RATIO_EPSILON for k in kept):
            kept.append(ratio)
            if flip:
                kept.append(np.float32(1.0) / ratio)
    return len(kept)


def _layer_steps(num_layers, steps, step_w, step_h):
    """[step_w, step_h] of every layer, with fluid's quirks: `steps` overrides both lists, and
    `step_h` is only read when `step_w` is given."""
    for name, value in (("step_h", step_h), ("step_w", step_w), ("steps", steps)):
        if value is not None:
            _as_list(name, value, num_layers)
    if steps is not None:
        step_w = step_h = steps
    if step_w is None:
        return [[0.0, 0.0] for _ in range(num_layers)]
    if step_h is None:
        raise ValueError("step_h: expected a list (one step per input) when step_w is given, "
                         "received None")
    # error messages name the list the values came from
    names = ("steps", "steps") if steps is not None else ("step_w", "step_h")
    result = []
    for i in range(num_layers):
        pair = []
        for name, values in zip(names, (step_w, step_h)):
            step = as_float32(f"{name}[{i}]", values[i])
            if step < 0:
                raise ValueError(f"{name}[{i}]: expected a number >= 0 (0: image size / map "
                                 f"size), received {values[i]!r}")
            pair.append(float(step))
        result.append(pair)
    return result


def _given_sizes(name, sizes, num_layers):
    """min_sizes or max_sizes as given: required with <= 2 inputs (exactly one entry per input)
    or when the other list is given; with more inputs fluid ignores entries beyond the inputs."""
    if sizes is None:
        raise ValueError(f"{name}: expected a list (one entry per input; min_ratio/max_ratio "
                         f"apply only with more than 2 inputs when both min_sizes and max_sizes "
                         f"are None), received None")
    sizes = _as_list(name, sizes, num_layers if num_layers <= 2 else None)
    if len(sizes) < num_layers:
        raise ValueError(f"{name}: expected at least {num_layers} entries (one per input), "
                         f"received {len(sizes)}: {sizes!r}")
    return sizes


def _prior_layers(num_layers, base_size, aspect_ratios, min_ratio, max_ratio, min_sizes,
                  max_sizes, steps, step_w, step_h, flip):
    """Every layer's prior_box settings, by fluid 1.8.5's multi_box_head rules."""
    _as_positive_float32("base_size", base_size)
    if num_layers <= 2 or min_sizes is not None or max_sizes is not None:
        min_sizes = _given_sizes("min_sizes", min_sizes, num_layers)
        max_sizes = _given_sizes("max_sizes", max_sizes, num_layers)
    else:
        min_sizes, max_sizes = _sizes_from_ratios(num_layers, base_size, min_ratio, max_ratio)

    if aspect_ratios is not None:
        aspect_ratios = _as_list("aspect_ratios", aspect_ratios, num_layers)
    layer_steps = _layer_steps(num_layers, steps, step_w, step_h)
    layers = []
    for i in range(num_layers):
        layer_min, layer_max = _layer_sizes(i, min_sizes[i], max_sizes[i])
        # fluid: aspect_ratios=None means no ratio but 1.0 on every layer.
        ratios = [] if aspect_ratios is None else _layer_ratios(i, aspect_ratios[i])
        num_boxes = _expanded_ratio_count(ratios, flip) * len(layer_min) + len(layer_max)
        layers.append(_PriorLayer([float(v) for v in layer_min], [float(v) for v in layer_max],
                                  [float(v) for v in ratios], layer_steps[i], num_boxes))
    return layers


# ---------------------------------------------------------------------------------------------
# convolution options


def _as_pair(name, value, minimum):
    """fluid's convert_to_list(value, 2): an int or two ints."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected an int or 2 ints, received {value!r}")
        return [as_int(name, v, minimum) for v in value]
    return [as_int(name, value, minimum)] * 2


def _as_padding(pad):
    """fluid 1.8 conv2d's padding: 'SAME'/'VALID', an int, [h, w], [top, bottom, left, right]
    or [[0, 0], [0, 0], [top, bottom], [left, right]]; returned as F.conv2d takes it."""
    if isinstance(pad, str):
        if pad.upper() not in ("SAME", "VALID"):
            raise ValueError(f"pad: expected an int, a list or 'SAME'/'VALID', received {pad!r}")
        return pad.upper()
    if isinstance(pad, (list, tuple)) and len(pad) == 4:
        if all(isinstance(p, (list, tuple)) for p in pad):
            if list(pad[0]) != [0, 0] or list(pad[1]) != [0, 0] or \
                    any(len(p) != 2 for p in pad[2:]):
                raise ValueError(f"pad: expected [[0, 0], [0, 0], [top, bottom], [left, right]] "
                                 f"(no padding of N and C), received {pad!r}")
            pad = [*pad[2], *pad[3]]
        return [as_int("pad", p, 0) for p in pad]
    return _as_pair("pad", pad, 0)


def _conv_output_size(size, kernel, stride, before, after, padding):
    if padding == "SAME":
        return -(-size // stride)
    if padding == "VALID":
        before = after = 0
    return (size + before + after - kernel) // stride + 1


class _Conv2D(nn.Layer):
    """fluid 1.8's conv2d with bias: named conv2d_<k>.w_0 / .b_0, weight [out, in, kh, kw] drawn
    from Normal(0, sqrt(2 / (kh * kw * in))), bias zero."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dtype):
        super().__init__(name_scope="conv2d", dtype=dtype)
        std = (2.0 / (kernel_size[0] * kernel_size[1] * in_channels)) ** 0.5
        self.weight = self.create_parameter(
            [out_channels, in_channels, *kernel_size], dtype=dtype,
            default_initializer=nn.initializer.Normal(0.0, std))
        self.bias = self.create_parameter([out_channels], dtype=dtype, is_bias=True)
        self._stride = stride
        self._padding = padding

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, stride=self._stride, padding=self._padding)


# ---------------------------------------------------------------------------------------------
# tensors


def _dtype_name(dtype):
    """'float32' for 'float32', paddle.float32, np.float32, ..."""
    if isinstance(dtype, str):
        return dtype
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype).split(".")[-1]


def _check_tensors(inputs, image):
    """inputs: a non-empty list of 4-D float tensors of one dtype and batch size; image: 4-D.
    Returns the inputs as a list."""
    if not isinstance(inputs, (list, tuple)):
        raise TypeError(f"inputs: expected a list of 4-D tensors, received "
                        f"{type(inputs).__name__}")
    if not inputs:
        raise ValueError("inputs: expected a non-empty list of 4-D tensors, received []")
    inputs = list(inputs)
    for name, x in [(f"inputs[{i}]", x) for i, x in enumerate(inputs)] + [("image", image)]:
        if not is_tensor(x):
            raise TypeError(f"{name}: expected a paddle Tensor, received {type(x).__name__}")
        if len(x.shape) != 4:
            raise ValueError(f"{name}: expected a 4-D tensor [N, C, H, W], received shape "
                             f"{list(x.shape)}")
    for i, x in enumerate(inputs):
        if dtype_name(x) not in _FLOAT_DTYPES:
            raise TypeError(f"inputs[{i}]: expected dtype float32 or float64, received "
                            f"{dtype_name(x)}")
        if dtype_name(x) != dtype_name(inputs[0]):
            raise TypeError(f"inputs[{i}]: expected the dtype of inputs[0] "
                            f"({dtype_name(inputs[0])}), received {dtype_name(x)}")
        n, n0 = x.shape[0], inputs[0].shape[0]
        if n >= 0 and n0 >= 0 and n != n0:
            raise ValueError(f"inputs[{i}]: expected the batch size of inputs[0] ({n0}), "
                             f"received shape {list(x.shape)}")
        if 0 in x.shape[1:]:
            raise ValueError(f"inputs[{i}]: expected C, H and W >= 1, received shape "
                             f"{list(x.shape)}")
        for axis, what in ((2, "height"), (3, "width")):
            size, image_size = x.shape[axis], image.shape[axis]
            # fluid's prior_box op: the map must be smaller than the image
            if size >= 0 and image_size >= 0 and not size < image_size:
                raise ValueError(f"inputs[{i}]: expected a {what} smaller than the image's "
                                 f"({image_size}), received shape {list(x.shape)}")
    return inputs


# ---------------------------------------------------------------------------------------------
# the head


def _rows(x, width):
    """[N, rows * width] -> [N, rows, width] (fluid: reshape [0, -1, width]); the row count is
    spelled out when known, so that a static program declares it despite a dynamic batch."""
    rows = x.shape[1] // width if x.shape[1] >= 0 else -1
    return paddle.reshape(x, [0, rows, width])


class MultiBoxHead(nn.Layer):
    """fluid 1.8.5's multi_box_head as a layer: ``forward(inputs, image)`` returns
    ``(mbox_locs, mbox_confs, boxes, variances)``.

    ``in_channels`` lists the channels of each input feature map; the other arguments are those
    of :func:`multi_box_head` (``dtype``: of the parameters, default Paddle's default dtype).
    ``parameters()`` come in fluid's creation order: for each input, the location conv's weight
    and bias, then the confidence conv's.
    """

    def __init__(self, in_channels, base_size, num_classes, aspect_ratios, min_ratio=None,
                 max_ratio=None, min_sizes=None, max_sizes=None, steps=None, step_w=None,
                 step_h=None, offset=0.5, variance=(0.1, 0.1, 0.2, 0.2), flip=True, clip=False,
                 kernel_size=1, pad=0, stride=1, name=None, min_max_aspect_ratios_order=False, *,
                 dtype=None):
        dtype = paddle.get_default_dtype() if dtype is None else _dtype_name(dtype)
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype: expected float32 or float64, received {dtype}")
        super().__init__(dtype=dtype)
        in_channels = _as_list("in_channels", in_channels, what="a list of ints (the channels "
                               "of each input)")
        if not in_channels:
            raise ValueError("in_channels: expected a non-empty list of ints, received []")
        self._in_channels = [as_int(f"in_channels[{i}]", c, 1) for i, c in enumerate(in_channels)]
        self._num_classes = as_int("num_classes", num_classes, 1)
        self._flip = as_bool("flip", flip)
        self._clip = as_bool("clip", clip)
        self._min_max_order = as_bool("min_max_aspect_ratios_order", min_max_aspect_ratios_order)
        self._offset = float(as_float32("offset", offset))
        if not 0.0 <= self._offset <= 1.0:
            raise ValueError(f"offset: expected a number in [0, 1], received {offset!r}")
        variance = _as_list("variance", variance, what="4 numbers")
        if len(variance) != 4:
            raise ValueError(f"variance: expected 4 numbers, received {variance!r}")
        self._variance = [float(_as_positive_float32("variance", v)) for v in variance]
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name: expected None or a str, received {type(name).__name__}")
        self._layers = _prior_layers(len(self._in_channels), base_size, aspect_ratios, min_ratio,
                                     max_ratio, min_sizes, max_sizes, steps, step_w, step_h,
                                     self._flip)
        self._kernel_size = _as_pair("kernel_size", kernel_size, 1)
        self._stride = _as_pair("stride", stride, 1)
        self._padding = _as_padding(pad)

        self._check_conv_sizes()

        # One list, in fluid's creation order (loc, conf per input), so that parameters() and
        # the parameter names (conv2d_<k>.w_0, .b_0) follow fluid's.
        self.convs = nn.LayerList()
        for channels, layer in zip(self._in_channels, self._layers):
            for outputs_per_box in (4, self._num_classes):
                self.convs.append(_Conv2D(channels, layer.num_boxes * outputs_per_box,
                                          self._kernel_size, self._stride, self._padding, dtype))

    def _check_conv_sizes(self):
        """Filters are an int32 attribute of conv2d, and a weight's element count an int64: a
        larger one is refused by Paddle with an unrelated error or wraps around."""
        for i, (channels, layer) in enumerate(zip(self._in_channels, self._layers)):
            filters = layer.num_boxes * max(4, self._num_classes)
            if filters >= 2**31:
                raise ValueError(f"num_classes: expected num_classes * {layer.num_boxes} (the "
                                 f"boxes per cell of inputs[{i}]) < 2**31 (the filters of its "
                                 f"conv), received {self._num_classes}")
            weight = [filters, channels, *self._kernel_size]
            if math.prod(weight) >= 2**63:
                raise ValueError(f"kernel_size: expected a conv weight of < 2**63 elements, "
                                 f"received {self._kernel_size} (weight {weight} with "
                                 f"in_channels[{i}] = {channels})")

    def _check_conv_fits(self, inputs):
        if isinstance(self._padding, str):
            pads = [0, 0, 0, 0]
        elif len(self._padding) == 2:
            pads = [self._padding[0]] * 2 + [self._padding[1]] * 2
        else:
            pads = self._padding
        for i, x in enumerate(inputs):
            for axis in (0, 1):
                size = x.shape[2 + axis]
                if size >= 0 and _conv_output_size(
                        size, self._kernel_size[axis], self._stride[axis], pads[2 * axis],
                        pads[2 * axis + 1], self._padding) < 1:
                    raise ValueError(f"kernel_size: expected a kernel that fits inputs[{i}] "
                                     f"(shape {list(x.shape)}, pad {self._padding!r}), "
                                     f"received {self._kernel_size}")

    # Under paddle.jit.to_static, run as written: the checks read the static shapes (-1 where
    # unknown), which the dy2static rewrite of `x.shape` would turn into tensors.
    @paddle.jit.not_to_static
    def forward(self, inputs, image):
        inputs = _check_tensors(inputs, image)
        if len(inputs) != len(self._in_channels):
            raise ValueError(f"inputs: expected {len(self._in_channels)} tensors (one per "
                             f"in_channels entry), received {len(inputs)}")
        for i, (x, channels) in enumerate(zip(inputs, self._in_channels)):
            if x.shape[1] != channels:
                raise ValueError(f"inputs[{i}]: expected {channels} channels (in_channels[{i}]), "
                                 f"received shape {list(x.shape)}")
            if dtype_name(x) != self._dtype:
                raise TypeError(f"inputs[{i}]: expected dtype {self._dtype} (that of the "
                                f"parameters), received {dtype_name(x)}")
        self._check_conv_fits(inputs)

        mbox_locs, mbox_confs, boxes, variances = [], [], [], []
        for i, (x, layer) in enumerate(zip(inputs, self._layers)):
            box, var = paddle.vision.ops.prior_box(
                x, image, min_sizes=layer.min_sizes, max_sizes=layer.max_sizes,
                aspect_ratios=layer.aspect_ratios, variance=self._variance, flip=self._flip,
                clip=self._clip, steps=layer.steps, offset=self._offset,
                min_max_aspect_ratios_order=self._min_max_order)
            boxes.append(box)
            variances.append(var)
            for conv, outputs in ((self.convs[2 * i], mbox_locs),
                                  (self.convs[2 * i + 1], mbox_confs)):
                # NCHW -> NHWC -> [N, H * W * filters]: each cell's boxes in prior order
                outputs.append(paddle.flatten(paddle.transpose(conv(x), [0, 2, 3, 1]), 1))

        if len(inputs) == 1:
            # fluid returns a single input's results as they are: locs/confs [N, H*W*nb*4]
            # and [N, H*W*nb*C], boxes/variances [H, W, nb, 4].
            locs, confs, box, var = mbox_locs[0], mbox_confs[0], boxes[0], variances[0]
        else:
            box = paddle.concat([paddle.reshape(b, [-1, 4]) for b in boxes])
            var = paddle.concat([paddle.reshape(v, [-1, 4]) for v in variances])
            locs = _rows(paddle.concat(mbox_locs, axis=1), 4)
            confs = _rows(paddle.concat(mbox_confs, axis=1), self._num_classes)
        box.stop_gradient = True
        var.stop_gradient = True
        return locs, confs, box, var


def multi_box_head(inputs, image, base_size, num_classes, aspect_ratios, min_ratio=None,
                   max_ratio=None, min_sizes=None, max_sizes=None, steps=None, step_w=None,
                   step_h=None, offset=0.5, variance=[0.1, 0.1, 0.2, 0.2], flip=True,
                   clip=False, kernel_size=1, pad=0, stride=1, name=None,
                   min_max_aspect_ratios_order=False):
    """fluid 1.8.5's ``fluid.layers.multi_box_head`` in a static program.

    Returns ``(mbox_locs [N, Np, 4], mbox_confs [N, Np, C], boxes [Np, 4], variances [Np, 4])``
    and creates the convolution parameters as fluid did (for each input the location conv's
    weight and bias, then the confidence conv's, named ``conv2d_<k>.w_0`` / ``.b_0``). In
    dygraph use :class:`MultiBoxHead`.
    """
    if paddle.in_dynamic_mode():
        raise RuntimeError("multi_box_head builds static programs (it creates parameters on "
                           "every call); in dygraph use paddle_ssd_op.MultiBoxHead")
    inputs = _check_tensors(inputs, image)
    for i, x in enumerate(inputs):
        if x.shape[1] < 1:
            raise ValueError(f"inputs[{i}]: expected a known number of channels, received shape "
                             f"{list(x.shape)}")
    head = MultiBoxHead([x.shape[1] for x in inputs], base_size, num_classes, aspect_ratios,
                        min_ratio, max_ratio, min_sizes, max_sizes, steps, step_w, step_h,
                        offset, variance, flip, clip, kernel_size, pad, stride, name,
                        min_max_aspect_ratios_order, dtype=dtype_name(inputs[0]))
    return head(inputs, image)
