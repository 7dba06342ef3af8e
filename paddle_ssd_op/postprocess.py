"""``detection_output``: fluid 1.8.5's ``fluid.layers.detection_output`` built from Paddle's own
operators (box_coder, softmax, transpose, an NMS op and a few shape ops), so that a saved
inference model that uses it runs in Paddle Inference without this package.

The NMS operator per mode:
- dygraph and PIR programs (Paddle 3.x): ``paddle._C_ops.multiclass_nms3``. It always computes
  the index, which gives [0, 6] rows instead of fluid's [[-1]] when nothing survives in the
  whole batch; the [[-1]] is made here (in programs by graph ops, see ``_fluid_empty_output``).
- Paddle 2.6 legacy programs: fluid's own ops ``multiclass_nms`` / ``multiclass_nms2``
  (appended with ``LayerHelper``), which give fluid's LoD and [[-1]] themselves; with
  ``return_rois_num`` (those ops do not count rows) ``multiclass_nms3``, followed by the [[-1]]
  graph ops and a ``lod_reset`` op that sets fluid's LoD.
"""

import paddle

from ._args import (as_bool, as_choice, as_float32, as_int, check_prediction_shapes, dtype_name,
                    in_pir_mode, is_tensor, known)

_FLOAT_DTYPES = ("float32", "float64")
_NMS_ATTRS = ("fluid", "forwarded")
_EMPTY_RESULTS = ("fluid", "empty")
# fluid 1.8.5 hard-codes these two attributes of its NMS op, whatever the caller passes.
_FLUID_BACKGROUND_LABEL = 0
_FLUID_NMS_ETA = 1.0
_OUT_COLUMNS = 6  # label, score, xmin, ymin, xmax, ymax


# Under paddle.jit.to_static (AST), converting this wrapper would turn ``x.shape`` into tensors
# and break its plain-Python argument checks; it needs no conversion (no tensor control flow).
@paddle.jit.not_to_static
def detection_output(loc, scores, prior_box, prior_box_var, background_label=0,
                     nms_threshold=0.3, nms_top_k=400, keep_top_k=200, score_threshold=0.01,
                     nms_eta=1.0, return_index=False, *, return_rois_num=False,
                     nms_attrs="fluid", empty_result="fluid"):
    """SSD detections: decode, softmax and multi-class NMS, as ``fluid.layers.detection_output``.

    Args:
        loc: [N, Np, 4] float32/float64, predicted offsets of every prior (decoded by
            ``box_coder``'s ``decode_center_size`` with normalized boxes).
        scores: [N, Np, C] class logits, dtype of ``loc`` (the softmax is taken here).
        prior_box: [Np, 4] priors (xmin, ymin, xmax, ymax), dtype of ``loc``.
        prior_box_var: [Np, 4] tensor (dtype of ``loc``), a list/tuple of 4 numbers, or None
            (unit variances; fluid raised TypeError there).
        background_label, nms_eta: accepted and checked but, as in fluid, not used: the NMS
            drops class 0 and never adapts its threshold, unless ``nms_attrs='forwarded'``.
        nms_threshold: IoU in [0, 1] above which a box suppresses another of its class.
        nms_top_k: candidates per class before NMS (-1: all).
        keep_top_k: detections per image after NMS over all classes (-1: all).
        score_threshold: class probability in [0, 1] a box must exceed (strictly).
        return_index: also return the index [No, 1] int32 of each row into the flattened
            [N * Np] boxes.
        return_rois_num: also return rois_num [N] int32, the rows of each image (last).
        nms_attrs: 'fluid' (background 0, no adaptive NMS) or 'forwarded' (the given
            ``background_label`` and ``nms_eta`` reach the NMS).
        empty_result: 'fluid' (no detection in the batch and ``return_index=False``: out is
            [[-1]]) or 'empty' (out is then [0, 6], as with ``return_index=True``).

    Returns:
        out [No, 6] rows (label, score, xmin, ymin, xmax, ymax), image after image, each image's
        rows by class ascending then score descending; then ``index`` with ``return_index``, then
        ``rois_num`` with ``return_rois_num``. A single tensor when neither is asked for.
        When nothing survives anywhere, rois_num is all zeros (also when out is [[-1]]).
    """
    attrs = _nms_attrs(background_label, nms_threshold, nms_top_k, keep_top_k, score_threshold,
                       nms_eta, nms_attrs)
    return_index = as_bool("return_index", return_index)
    return_rois_num = as_bool("return_rois_num", return_rois_num)
    empty_result = as_choice("empty_result", empty_result, _EMPTY_RESULTS)
    _check_inputs(loc, scores, prior_box)
    variance = _variance(prior_box_var, prior_box)
    sentinel = empty_result == "fluid" and not return_index

    if paddle.in_dynamic_mode():
        with paddle.no_grad():
            boxes, probs = _decode(loc, scores, prior_box, variance)
            place = boxes.place
            if not place.is_cpu_place():
                # Paddle's GPU multiclass_nms3 is another algorithm (rows not in fluid's order,
                # limits on the top-k): fluid's is the CPU kernel.
                boxes, probs = boxes.cpu(), probs.cpu()
            out, index, rois_num = paddle._C_ops.multiclass_nms3(boxes, probs, None, *attrs)
        if sentinel and out.shape[0] == 0:
            out = paddle.full([1, 1], -1.0, out.dtype)
        if not place.is_cpu_place():
            out, index, rois_num = (x._copy_to(place, True) for x in (out, index, rois_num))
    else:
        if in_pir_mode():
            loc, prior_box, variance = _fed_dtype_checked(loc, prior_box, variance)
        boxes, probs = _decode(loc, scores, prior_box, variance)
        if in_pir_mode():
            out, index, rois_num = paddle._C_ops.multiclass_nms3(boxes, probs, None, *attrs)
            if sentinel:
                out = _fluid_empty_output(out, _empty_flag(rois_num))
        elif not return_rois_num:
            # fluid's own program: its NMS ops give fluid's [[-1]] and LoD themselves.
            out, index = _append_fluid_nms(boxes, probs, attrs, with_index=not sentinel)
            rois_num = None
        else:
            out, index, rois_num = _append_legacy_nms3(boxes, probs, attrs)
            empty = _empty_flag(rois_num) if sentinel else None
            offsets = _fluid_lod_offsets(rois_num, empty)
            if sentinel:
                out = _fluid_empty_output(out, empty)
            out = _with_lod(out, offsets)
            if return_index:
                index = _with_lod(index, offsets)
    for x in (out, index, rois_num):
        if x is not None:
            x.stop_gradient = True
    results = (out,) + ((index,) if return_index else ()) + ((rois_num,) if return_rois_num else ())
    return results if len(results) > 1 else out


# ---------------------------------------------------------------------------------------------
# arguments

def _nms_attrs(background_label, nms_threshold, nms_top_k, keep_top_k, score_threshold, nms_eta,
               nms_attrs):
    """The attributes of multiclass_nms3 in its argument order, after checking all of them."""
    background_label = as_int("background_label", background_label)
    nms_threshold = _as_unit_interval("nms_threshold", nms_threshold)
    score_threshold = _as_unit_interval("score_threshold", score_threshold)
    nms_top_k = _as_top_k("nms_top_k", nms_top_k)
    keep_top_k = _as_top_k("keep_top_k", keep_top_k)
    eta = float(as_float32("nms_eta", nms_eta))
    if not 0.0 < eta <= 1.0:
        raise ValueError(f"nms_eta: expected a number in (0, 1], received {nms_eta!r}")
    if as_choice("nms_attrs", nms_attrs, _NMS_ATTRS) == "fluid":
        background_label, eta = _FLUID_BACKGROUND_LABEL, _FLUID_NMS_ETA
    normalized = True  # fluid's box_coder decodes normalized boxes, so IoU has no +1
    return (score_threshold, nms_top_k, keep_top_k, nms_threshold, normalized, eta,
            background_label)


def _as_top_k(name, value):
    value = as_int(name, value)
    if value == 0 or value < -1:
        raise ValueError(f"{name}: expected -1 (all) or an int > 0, received {value}")
    return value


def _as_unit_interval(name, value):
    result = float(as_float32(name, value))
    if not 0.0 <= result <= 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1], received {value!r}")
    return result


def _check_inputs(loc, scores, prior_box):
    for name, x in (("loc", loc), ("scores", scores), ("prior_box", prior_box)):
        if not is_tensor(x):
            raise TypeError(f"{name}: expected a paddle Tensor, received {type(x).__name__}")
    if len(loc.shape) != 3 or loc.shape[2] != 4:
        raise ValueError(f"loc: expected shape [N, Np, 4], received {list(loc.shape)}")
    if dtype_name(loc) not in _FLOAT_DTYPES:
        raise TypeError(f"loc: expected dtype float32 or float64, received {dtype_name(loc)}")
    for name, x in (("scores", scores), ("prior_box", prior_box)):
        if dtype_name(x) != dtype_name(loc):
            raise TypeError(f"{name}: expected the dtype of loc ({dtype_name(loc)}), "
                            f"received {dtype_name(x)}")
    check_prediction_shapes("loc", loc, "scores", scores, prior_box)

def _variance(prior_box_var, prior_box):
    """A [Np, 4] tensor, or the 4 variances as a list (box_coder's ``variance`` attribute)."""
    if prior_box_var is None:
        return [1.0, 1.0, 1.0, 1.0]
    if is_tensor(prior_box_var):
        vs, ps = list(prior_box_var.shape), list(prior_box.shape)
        if len(vs) != 2 or vs[1] != 4 or (known(vs[0], ps[0]) and vs[0] != ps[0]):
            raise ValueError(f"prior_box_var: expected shape [Np, 4] = [{ps[0]}, 4] like "
                             f"prior_box, received {vs}")
        if dtype_name(prior_box_var) != dtype_name(prior_box):
            raise TypeError(f"prior_box_var: expected the dtype of prior_box "
                            f"({dtype_name(prior_box)}), received {dtype_name(prior_box_var)}")
        return prior_box_var
    if not isinstance(prior_box_var, (list, tuple)) or len(prior_box_var) != 4:
        raise TypeError(f"prior_box_var: expected a [Np, 4] tensor, 4 numbers or None, "
                        f"received {type(prior_box_var).__name__} {prior_box_var!r}")
    return [float(as_float32("prior_box_var", v)) for v in prior_box_var]


# ---------------------------------------------------------------------------------------------
# computation

def _fed_dtype_checked(loc, prior_box, variance):
    """The box_coder inputs of a PIR program behind a cast to their own dtype.

    A PIR executor does not check what is fed: an array of another dtype (float64 fed to a
    float32 ``loc``) reaches box_coder, whose CPU kernel finds the mismatch inside an OpenMP
    region, where the exception aborts the process. The cast's kernel finds it outside and
    raises it as a Python exception; a tensor of the right dtype is only copied.
    """
    loc, prior_box = paddle.cast(loc, dtype_name(loc)), paddle.cast(prior_box, dtype_name(prior_box))
    if is_tensor(variance):
        variance = paddle.cast(variance, dtype_name(variance))
    return loc, prior_box, variance


def _decode(loc, scores, prior_box, variance):
    """fluid's first half: decoded boxes [N, Np, 4] and class probabilities [N, C, Np]."""
    boxes = paddle.vision.ops.box_coder(prior_box, variance, loc, "decode_center_size",
                                        box_normalized=True)
    probs = paddle.transpose(paddle.nn.functional.softmax(scores), [0, 2, 1])
    return boxes, probs


_ATTR_NAMES = ("score_threshold", "nms_top_k", "keep_top_k", "nms_threshold", "normalized",
               "nms_eta", "background_label")


def _append_fluid_nms(boxes, probs, attrs, with_index):
    """fluid's NMS op in a Paddle 2.6 legacy program: multiclass_nms, or multiclass_nms2 when
    the index is wanted (an empty batch then gives [0, 6] rows, not [[-1]])."""
    from paddle.base.layer_helper import LayerHelper

    helper = LayerHelper("detection_output")
    outputs = {"Out": helper.create_variable_for_type_inference(boxes.dtype)}
    if with_index:
        outputs["Index"] = helper.create_variable_for_type_inference("int32")
    helper.append_op(type="multiclass_nms2" if with_index else "multiclass_nms",
                     inputs={"BBoxes": boxes, "Scores": probs}, outputs=outputs,
                     attrs=dict(zip(_ATTR_NAMES, attrs)))
    return outputs["Out"], outputs.get("Index")


def _append_legacy_nms3(boxes, probs, attrs):
    """multiclass_nms3 (which also counts the rows per image) in a Paddle 2.6 legacy program."""
    from paddle.base.layer_helper import LayerHelper

    helper = LayerHelper("detection_output")
    outputs = {"Out": helper.create_variable_for_type_inference(boxes.dtype),
               "Index": helper.create_variable_for_type_inference("int32"),
               "NmsRoisNum": helper.create_variable_for_type_inference("int32")}
    # On the CPU in any place, as fluid's NMS ops: Paddle's GPU kernel of this op is another
    # algorithm (rows not in fluid's order).
    with paddle.static.device_guard("cpu"):
        helper.append_op(type="multiclass_nms3", inputs={"BBoxes": boxes, "Scores": probs},
                         outputs=outputs, attrs=dict(zip(_ATTR_NAMES, attrs)))
    return outputs["Out"], outputs["Index"], outputs["NmsRoisNum"]


def _empty_flag(rois_num):
    """(e, R): [1] tensors of rois_num's dtype, R the rows of the batch and e = 1 if R == 0
    else 0."""
    total = paddle.sum(rois_num).reshape([1])
    one = paddle.full([1], 1, total.dtype)
    return one - paddle.minimum(total, one), total


def _fluid_empty_output(out, empty_flag):
    """out, or [[-1]] when the batch has no row, by graph ops only (no control flow).

    A -1 row is appended to out ([R, 6] -> [R + 1, 6]) and the first ``R + e`` rows and
    ``6 - 5e`` columns are kept: that is out itself when R > 0, and the [[-1]] of the appended
    row when R == 0 (e = 1). The static shape is therefore [-1, -1].
    """
    empty, total = empty_flag
    padded = paddle.concat([out, paddle.full([1, _OUT_COLUMNS], -1.0, out.dtype)], axis=0)
    return paddle.slice(padded, axes=[0, 1], starts=[0, 0],
                        ends=[total + empty, _OUT_COLUMNS - (_OUT_COLUMNS - 1) * empty])


def _fluid_lod_offsets(rois_num, empty_flag):
    """fluid's LoD offsets of out in a legacy program: where each image's rows start; with the
    [[-1]] of an empty batch (``empty_flag`` given) [0, 1], whatever N."""
    ends = paddle.cumsum(rois_num)
    if empty_flag is not None:
        empty, _ = empty_flag
        # Empty batch: the ends [1, 1, ..., 1] cut to [1]; otherwise the ends unchanged.
        count = paddle.shape(ends)[:1]
        ends = paddle.slice(ends + empty, axes=[0], starts=[0], ends=[count - (count - 1) * empty])
    return paddle.concat([paddle.zeros([1], ends.dtype), ends])


def _with_lod(x, offsets):
    """x with the level-1 LoD ``offsets`` (a lod_reset op reading them at run time)."""
    from paddle.base.layer_helper import LayerHelper

    helper = LayerHelper("detection_output")
    result = helper.create_variable_for_type_inference(x.dtype)
    helper.append_op(type="lod_reset", inputs={"X": x, "Y": offsets}, outputs={"Out": result},
                     attrs={"append": False})
    return result
