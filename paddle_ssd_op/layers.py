"""``ssd_loss``: the fluid-compatible entry point of the fused operator.

It checks and casts every argument (a wrong attribute type aborts Paddle 3.x), turns the
convenience forms (lists of per-image boxes, a list of variances, ``gt_lengths`` as a list) into
tensors, and calls the op in the current mode: dygraph, PIR static (Paddle 3.x, also under
``paddle.jit.to_static``) or legacy static (Paddle 2.6).
"""

import numpy as np
import paddle

from . import _core
from ._args import as_int, check_prediction_shapes, dtype_name, in_pir_mode, is_tensor, known
from ._loader import OP_NAME

_FLOAT_DTYPES = ("float32", "float64")
# Predictions of these dtypes are computed in float32 (casts around the op): the loss and the
# gradients of location and confidence come back in the input dtype.
_HALF_DTYPES = ("float16", "bfloat16")
_LABEL_DTYPES = ("int32", "int64", "float32", "float64")
_LENGTH_DTYPES = ("int32", "int64")
# The op's attributes in its order: the core's table (include/ssd_loss/attributes.h).
_ATTR_NAMES = tuple(name for name, _, _ in _core.ATTRIBUTES)


# Under paddle.jit.to_static (AST), converting this wrapper would turn ``x.shape`` into tensors
# and break its plain-Python argument checks; it needs no conversion (no tensor control flow).
@paddle.jit.not_to_static
def ssd_loss(location, confidence, gt_box, gt_label, prior_box, prior_box_var=None,
             background_label=0, overlap_threshold=0.5, neg_pos_ratio=3.0, neg_overlap=0.5,
             loc_loss_weight=1.0, conf_loss_weight=1.0, match_type="per_prediction",
             mining_type="max_negative", normalize=True, sample_size=None, *, gt_lengths=None,
             normalization=None, min_negatives_per_image=0, neg_overlap_mode="fluid",
             return_targets=False, name=None):
    """SSD multibox loss, the drop-in replacement of ``fluid.layers.ssd_loss`` (Paddle 1.8).

    Args:
        location: [N, Np, 4] float32/float64, predicted encoded offsets per prior; float16 and
            bfloat16 are computed in float32, and the loss and gradients come back in that dtype.
        confidence: [N, Np, C] logits, same dtype as ``location``.
        gt_box: [Ng, 4] gt boxes (xmin, ymin, xmax, ymax) of all images, image after image. In a
            static program, a LoDTensor whose level-1 LoD gives the boxes per image. In dygraph,
            also a list of N tensors [n_i, 4].
        gt_label: [Ng, 1] or [Ng] class ids (int32, int64 or float, truncated), in [0, C). Same
            LoD as ``gt_box``, or a list of N tensors when ``gt_box`` is a list.
        prior_box: [Np, 4] priors (xmin, ymin, xmax, ymax). ``gt_box``, ``prior_box`` and
            ``prior_box_var`` have the dtype of ``location``, float32 when that is float16/bfloat16.
        prior_box_var: [Np, 4] tensor, a list of 4 floats, or None (unit variances).
        background_label, overlap_threshold, neg_pos_ratio, neg_overlap, loc_loss_weight,
        conf_loss_weight, match_type, normalize: as in fluid.
        mining_type: 'max_negative' (fluid's), or 'hard_example' (OHEM: keep the
            ``sample_size`` priors of highest classification loss per image; see docs/options.md).
        sample_size: priors kept per image with 'hard_example' (required then).
        gt_lengths: boxes per image (list/tuple of ints, or a 1-D int32/int64 tensor of length N);
            takes precedence over the LoD.
        normalization: None (from ``normalize``: 'valid' or 'none'), 'valid' (positives in the
            batch, at least 1), 'full' (N * Np), 'batch_size' (N) or 'none'.
        min_negatives_per_image: with 'max_negative', mine at least this many negatives in every
            image, also in images without positives or gt.
        neg_overlap_mode: 'fluid' (neg_overlap has no effect) or 'caffe' (unmatched priors whose
            best IoU with a gt is >= neg_overlap are never negatives).
        return_targets: also return a dict with 'match_indices' [N, Np] int32 (-1 unmatched),
            'target_class' [N, Np] int32 (-1: not in the confidence loss), 'negative_mask'
            [N, Np] bool and 'num_positives' (int64 scalar tensor).
        name: optional name of the operator in a static program.

    Returns:
        loss of shape [N, 1]: each image's summed loss, divided according to ``normalization``
        (by default the number of matched priors in the whole batch, at least 1). With
        ``return_targets``, ``(loss, targets)``.
    """
    attrs = _op_attrs(locals())
    dynamic = paddle.in_dynamic_mode()
    if isinstance(gt_box, (list, tuple)) or isinstance(gt_label, (list, tuple)):
        gt_box, gt_label, gt_lengths = _concat_per_image(gt_box, gt_label, gt_lengths, dynamic)

    _check_tensor("location", location)
    _check_tensor("confidence", confidence)
    _check_tensor("gt_box", gt_box)
    _check_tensor("gt_label", gt_label)
    _check_tensor("prior_box", prior_box)
    _check_shapes(location, confidence, gt_box, gt_label, prior_box)
    dtype = _compute_dtype(location)
    prior_box_var = _variance_tensor(prior_box_var, prior_box, dtype)
    gt_lengths = _lengths_tensor(gt_lengths, location, gt_box)
    if dynamic and gt_lengths is None:
        _require_gt_layout(location, gt_box)
    half = dtype_name(location) if dtype != dtype_name(location) else None
    if half:
        location, confidence = paddle.cast(location, dtype), paddle.cast(confidence, dtype)

    if dynamic and not paddle.is_grad_enabled():
        # Under paddle.no_grad() the op must record no graph: the custom-op runner ignores the
        # grad mode, but not inputs that need no gradient.
        location, confidence = location.detach(), confidence.detach()
    inputs = (location, confidence, gt_box, gt_label, prior_box, prior_box_var, gt_lengths)
    if dynamic or in_pir_mode():
        outs = _run_custom_op(*inputs, *attrs)
        recording = not dynamic or paddle.is_grad_enabled()
        for out in outs[1:] if recording else outs:  # the saved state is never differentiable
            out.stop_gradient = True
    else:
        outs = _append_legacy_op(inputs, attrs, dtype, name)
    loss = paddle.cast(outs[0], half) if half else outs[0]
    if not return_targets:
        return loss
    match, target_class = outs[1], outs[2]
    positive = paddle.greater_equal(match, paddle.zeros_like(match))
    targets = {
        "match_indices": match,
        "target_class": target_class,
        "negative_mask": paddle.logical_and(
            paddle.logical_not(positive),
            paddle.greater_equal(target_class, paddle.zeros_like(target_class))),
        "num_positives": paddle.sum(paddle.cast(positive, "int64")),
    }
    return loss, targets


# ---------------------------------------------------------------------------------------------
# attributes

def _op_attrs(arguments):
    """The op's attributes from ``ssd_loss``'s arguments: the values in the op's order, cast to
    their declared C++ types. The casts, the value rules and their messages are the core's
    (``_core.op_attributes``, whose rules the op applies when it runs), so a bad value gets the
    same exception and message here, from ``_core`` and from a program run later."""
    values = {name: arguments[name] for name in _ATTR_NAMES}
    if values["normalization"] is None:  # then from normalize
        del values["normalization"]
    if values["sample_size"] is None:  # fluid's "not given"
        values["sample_size"] = 0
    return _core.op_attributes(normalize=arguments["normalize"], **values)


# ---------------------------------------------------------------------------------------------
# tensors

def _check_tensor(name, x):
    if not is_tensor(x):
        raise TypeError(f"{name}: expected a paddle Tensor, received {type(x).__name__}")


def _compute_dtype(location):
    """The float type the op computes in: float32 for float16/bfloat16 predictions."""
    return "float32" if dtype_name(location) in _HALF_DTYPES else dtype_name(location)


def _shape_str(x):
    return str(list(x.shape))


def _check_shapes(location, confidence, gt_box, gt_label, prior_box):
    if len(location.shape) != 3 or location.shape[2] != 4:
        raise ValueError(f"location: expected shape [N, Np, 4], received {list(location.shape)}")
    if dtype_name(location) not in _FLOAT_DTYPES + _HALF_DTYPES:
        raise TypeError(f"location: expected dtype float32, float64, float16 or bfloat16, "
                        f"received {dtype_name(location)}")
    if dtype_name(confidence) != dtype_name(location):
        raise TypeError(f"confidence: expected the dtype of location ({dtype_name(location)}), "
                        f"received {dtype_name(confidence)}")
    boxes = _compute_dtype(location)
    for name, x in (("gt_box", gt_box), ("prior_box", prior_box)):
        if dtype_name(x) != boxes:
            raise TypeError(f"{name}: expected dtype {boxes} (location is {dtype_name(location)}), "
                            f"received {dtype_name(x)}")
    check_prediction_shapes("location", location, "confidence", confidence, prior_box)
    bs, gs = list(gt_box.shape), list(gt_label.shape)
    if len(bs) != 2 or bs[1] != 4:
        raise ValueError(f"gt_box: expected shape [Ng, 4], received {bs}")
    if not (len(gs) == 1 or (len(gs) == 2 and gs[1] == 1)):
        raise ValueError(f"gt_label: expected shape [Ng, 1] or [Ng], received {gs}")
    if known(gs[0], bs[0]) and gs[0] != bs[0]:
        raise ValueError(f"gt_label: expected one label per gt_box row ({bs[0]}), "
                         f"received shape {gs}")
    if dtype_name(gt_label) not in _LABEL_DTYPES:
        raise TypeError(f"gt_label: expected dtype int32, int64, float32 or float64, "
                        f"received {dtype_name(gt_label)}")

def _variance_tensor(prior_box_var, prior_box, dtype):
    if prior_box_var is None or is_tensor(prior_box_var):
        if prior_box_var is not None:
            vs, np_ = list(prior_box_var.shape), prior_box.shape[0]
            four = vs in ([4], [1, 4])
            if not four and (len(vs) != 2 or vs[1] != 4 or (known(np_, vs[0]) and vs[0] != np_)):
                raise ValueError(f"prior_box_var: expected shape [Np, 4] = [{np_}, 4] or 4 "
                                 f"values, received {vs}")
            if dtype_name(prior_box_var) != dtype:
                raise TypeError(f"prior_box_var: expected dtype {dtype} (that of prior_box), "
                                f"received {dtype_name(prior_box_var)}")
        return prior_box_var
    values = np.asarray(prior_box_var)
    if values.dtype.kind not in "iuf" or values.shape not in ((4,), (prior_box.shape[0], 4)):
        raise ValueError(f"prior_box_var: expected None, a [Np, 4] tensor or 4 numbers, "
                         f"received {prior_box_var!r}")
    if paddle.in_dynamic_mode():
        return paddle.to_tensor(values.astype(dtype))
    if values.shape == (4,):
        # Not paddle.assign: Paddle 2.6 stores a float64 constant as float32.
        return paddle.concat([paddle.full([1], float(v), dtype) for v in values])
    if dtype == "float64" and not in_pir_mode():
        raise TypeError("prior_box_var: a float64 [Np, 4] array cannot be embedded in a Paddle 2.6 "
                        "static program exactly; feed it as a tensor (paddle.static.data)")
    return paddle.assign(values.astype(dtype))


def _lengths_tensor(gt_lengths, location, gt_box):
    if gt_lengths is None:
        return None
    n, ng = location.shape[0], gt_box.shape[0]
    if is_tensor(gt_lengths):
        if dtype_name(gt_lengths) not in _LENGTH_DTYPES or len(gt_lengths.shape) != 1:
            raise TypeError(f"gt_lengths: expected a 1-D int32/int64 tensor, received "
                            f"{dtype_name(gt_lengths)} of shape {_shape_str(gt_lengths)}")
        if known(n, gt_lengths.shape[0]) and gt_lengths.shape[0] != n:
            raise ValueError(f"gt_lengths: expected one count per image (N = {n}), received "
                             f"{gt_lengths.shape[0]} values")
        return gt_lengths
    if isinstance(gt_lengths, np.ndarray):
        gt_lengths = gt_lengths.tolist()
    if not isinstance(gt_lengths, (list, tuple)):
        raise TypeError(f"gt_lengths: expected a list of ints or a 1-D int tensor, received "
                        f"{type(gt_lengths).__name__}")
    lengths = [as_int("gt_lengths", v) for v in gt_lengths]
    if known(n) and len(lengths) != n:
        raise ValueError(f"gt_lengths: expected one count per image (N = {n}), received "
                         f"{len(lengths)} values")
    if any(v < 0 for v in lengths):
        raise ValueError(f"gt_lengths: expected counts >= 0, received {lengths}")
    if known(ng) and sum(lengths) != ng:
        raise ValueError(f"gt_lengths: expected counts summing to the number of gt_box rows "
                         f"({ng}), received {lengths} (sum {sum(lengths)})")
    lengths = np.asarray(lengths, dtype="int64")
    if paddle.in_dynamic_mode():
        # On the CPU whatever the default device: the op reads box counts as host metadata (a GPU
        # tensor would cost the host fallback a device-to-host copy).
        return paddle.to_tensor(lengths, place=paddle.CPUPlace())
    return paddle.assign(lengths)


def _concat_per_image(gt_box, gt_label, gt_lengths, dynamic):
    """Lists of per-image tensors (dygraph) -> concatenated tensors and their lengths."""
    if not dynamic:
        raise TypeError("gt_box: lists of per-image tensors are accepted in dygraph only; in a "
                        "static program feed a LoDTensor or pass gt_lengths")
    if not isinstance(gt_box, (list, tuple)) or not isinstance(gt_label, (list, tuple)):
        raise TypeError("gt_box, gt_label: expected both to be lists of per-image tensors, "
                        f"received {type(gt_box).__name__} and {type(gt_label).__name__}")
    if len(gt_box) != len(gt_label):
        raise ValueError(f"gt_label: expected one tensor per image like gt_box ({len(gt_box)}), "
                         f"received {len(gt_label)}")
    if gt_lengths is not None:
        raise ValueError("gt_lengths: must be None when gt_box is a list of per-image tensors "
                         "(the list already gives the boxes per image)")
    if not gt_box:
        raise ValueError("gt_box: expected one tensor per image, received an empty list")
    # Checked image by image: equal totals with unequal per-image counts would pair one image's
    # boxes with another's labels.
    for i, (b, l) in enumerate(zip(gt_box, gt_label)):
        _check_tensor(f"gt_box[{i}]", b)
        _check_tensor(f"gt_label[{i}]", l)
        bs, ls = list(b.shape), list(l.shape)
        if len(bs) != 2 or bs[1] != 4:
            raise ValueError(f"gt_box[{i}]: expected shape [n_{i}, 4] (the boxes of image {i}), "
                             f"received {bs}")
        if not (len(ls) == 1 or (len(ls) == 2 and ls[1] == 1)) or ls[0] != bs[0]:
            raise ValueError(f"gt_label[{i}]: expected shape [{bs[0]}, 1] or [{bs[0]}] (one label "
                             f"per box of gt_box[{i}]), received {ls}")
        for name, x, first in ((f"gt_box[{i}]", b, gt_box[0]), (f"gt_label[{i}]", l, gt_label[0])):
            if dtype_name(x) != dtype_name(first):
                raise TypeError(f"{name}: expected the dtype of {name.split('[')[0]}[0] "
                                f"({dtype_name(first)}), received {dtype_name(x)}")
    lengths = [int(b.shape[0]) for b in gt_box]
    boxes = paddle.concat(list(gt_box), axis=0)
    labels = paddle.concat([l.reshape([-1]) for l in gt_label], axis=0)
    return boxes, labels, lengths


def _require_gt_layout(location, gt_box):
    """In dygraph, N > 1 needs gt_lengths (or the rare eager tensor carrying a LoD)."""
    if location.shape[0] <= 1:
        return
    try:
        has_lod = bool(gt_box.get_tensor().lod())
    except (AttributeError, RuntimeError):
        has_lod = False
    if not has_lod:
        raise ValueError(
            f"gt_box: cannot tell which of its {gt_box.shape[0]} boxes belong to which of the "
            f"{location.shape[0]} images. Pass gt_lengths=[boxes of image 0, image 1, ...], or "
            "lists of per-image tensors as gt_box and gt_label (in a static program, feed gt_box "
            "as a LoDTensor with one LoD segment per image).")


# ---------------------------------------------------------------------------------------------
# dispatch

def _run_custom_op(*args):
    run = getattr(paddle._C_ops, "_run_custom_op", None)
    if run is None:  # Paddle 2.6
        run = paddle.base.core.eager._run_custom_op
    return run(OP_NAME, *args)


_INPUT_NAMES = ("Location", "Confidence", "GtBox", "GtLabel", "PriorBox", "PriorBoxVar",
                "GtLengths")
_OPTIONAL_INPUTS = ("PriorBoxVar", "GtLengths")
_OUTPUTS = (("Loss", None), ("MatchIndices", "int32"), ("TargetClass", "int32"),
            ("LocTarget", None), ("SoftmaxStats", None), ("Normalizer", None))


def _append_legacy_op(inputs, attrs, dtype, name):
    from paddle.base.layer_helper import LayerHelper

    location, confidence = inputs[0], inputs[1]
    # Legacy static graphs fail to build the grad op when only one of the two differentiable
    # inputs needs a gradient; a differentiable copy of the frozen one avoids that.
    if location.stop_gradient != confidence.stop_gradient:
        if location.stop_gradient:
            location = _differentiable_copy(location)
        else:
            confidence = _differentiable_copy(confidence)
        inputs = (location, confidence) + tuple(inputs[2:])

    helper = LayerHelper(OP_NAME, name=name)
    op_inputs = {}
    for key, value in zip(_INPUT_NAMES, inputs):
        if key in _OPTIONAL_INPUTS:
            if value is not None:
                op_inputs[key + "@OPTIONAL"] = value
        else:
            op_inputs[key] = value
    outputs = {key: helper.create_variable_for_type_inference(out_dtype or dtype)
               for key, out_dtype in _OUTPUTS}
    helper.append_op(type=OP_NAME, inputs=op_inputs, outputs=outputs,
                     attrs=dict(zip(_ATTR_NAMES, attrs)))
    for key, _ in _OUTPUTS[1:]:
        outputs[key].stop_gradient = True
    return [outputs[key] for key, _ in _OUTPUTS]


def _differentiable_copy(x):
    copy = paddle.scale(x, 1.0)
    copy.stop_gradient = False
    return copy
