"""DetectionMAP: fluid 1.8.5's detection mAP metric (``fluid.metrics.DetectionMAP``, i.e. the
``detection_map`` op run without and with state) as a ``paddle.metric.Metric``.

The numbers are those of fluid's C++ op (paddle/fluid/operators/detection_map_op.h), quirks
included: the strict IoU test, float32 precision and recall, the 11-point walk compared in
double, float32 sums in fluid's order, ``background_label`` ignored (fluid never forwards it, so
the op's 0 applies: classes without positives are skipped), labels outside [0, class_num)
evaluated in their batch but dropped from the accumulated state.

The matching is vectorized over all images at once. Fluid walks the detections of each image and
class in score order, matching each to its best gt and marking that gt visited; a detection's best
gt does not depend on what was visited, so a detection is a true positive exactly when it is the
first (in score order) of those whose best gt is that gt with IoU > threshold, and not ignored (a
difficult best gt with ``evaluate_difficult=False``); every other one that is not ignored is a
false positive.
"""
import zlib  # noqa: F401  -- must precede paddle: paddle 2.6.2 exports a zlib that crashes Python's

import math
import numbers
from array import array as _c_array

import numpy as np
import paddle

__all__ = ["DetectionMAP"]

_F32 = np.float32
_AP_VERSIONS = ("integral", "11point")
# Fluid casts labels to int; we require integral values that fit an int32.
_LABEL_LIMIT = 2.0 ** 31
_PAIRS_PER_CHUNK = 1 << 20
_LENGTH_LIMIT = 2 ** 63 - 1  # rows per image are held as int64


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of shape {list(value.shape)} and dtype {value.dtype}"
    return f"{value!r} ({type(value).__name__})"


def _as_array(value, name):
    """A NumPy array of a NumPy array, paddle tensor, list or number; TypeError otherwise."""
    if isinstance(value, paddle.Tensor):
        # A bfloat16 tensor's numpy() holds the raw bits as uint16: take the values instead.
        value = (value.astype("float32") if value.dtype == paddle.bfloat16 else value).numpy()
    elif not isinstance(value, (np.ndarray, list, tuple, numbers.Number)):
        raise TypeError(f"{name}: expected a NumPy array or a dygraph paddle.Tensor, received "
                        f"{type(value).__name__} (in a static program, fetch it first)")
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{name}: expected a rectangular array, received {value!r}") from error
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a real numeric array, received dtype {array.dtype}")
    return array


def _numeric(value, name, columns):
    """A float32 [rows, columns] array of finite numbers."""
    array = _as_array(value, name)
    if array.dtype.kind == "b":
        raise TypeError(f"{name}: expected a float or int array, received dtype bool")
    if array.ndim != 2 or array.shape[1] != columns:
        raise ValueError(f"{name}: expected shape [rows, {columns}], received "
                         f"{list(array.shape)}")
    array = array.astype(_F32)
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite values, received NaN or inf at row "
                         f"{int(np.flatnonzero(~np.isfinite(array).all(1))[0])}")
    return array


def _column(value, name, rows):
    """A [rows] array of a [rows] or [rows, 1] input."""
    array = _as_array(value, name)
    if array.shape not in ((rows,), (rows, 1)):
        raise ValueError(f"{name}: expected shape [{rows}, 1] or [{rows}], received "
                         f"{list(array.shape)}")
    return array.reshape(rows)


def _labels(values, name):
    """int64 class ids of float32 labels (fluid casts them to float32, then to int)."""
    bad = (values != np.floor(values)) | (np.abs(values) >= _LABEL_LIMIT)
    if bad.any():
        raise ValueError(f"{name}: expected integer class ids in the int32 range, received "
                         f"{values[bad][0].item()!r}")
    return values.astype(np.int64)


def _lengths(value, name, rows, rows_of=None):
    """int64 [N] rows per image: N >= 1, non-negative, summing to `rows` (the rows of the
    array named `rows_of`; no sum check when None)."""
    array = _as_array(value, name)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D list of rows per image, received "
                         f"shape {list(array.shape)}")
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integers (rows per image), received dtype "
                        f"{array.dtype}")
    # Checked as Python ints: a NumPy sum wraps around (lengths of 2**62 summing to `rows`
    # would pass and make np.repeat corrupt the heap), a uint64 cast to int64 turns negative.
    counts = array.tolist()
    if any(count < 0 for count in counts):
        raise ValueError(f"{name}: expected non-negative rows per image, received {counts}")
    if any(count > _LENGTH_LIMIT for count in counts):
        raise ValueError(f"{name}: expected rows per image <= {_LENGTH_LIMIT}, received "
                         f"{counts}")
    if rows is not None and sum(counts) != rows:
        raise ValueError(f"{name}: expected rows per image summing to {rows} (the rows of "
                         f"{rows_of}), received {counts} (sum {sum(counts)})")
    return array.astype(np.int64)


def _is_nothing_survived(value):
    """detection_output's "no detection in any image" output: a [1, 1] array holding -1."""
    if isinstance(value, paddle.Tensor):
        return list(value.shape) == [1, 1] and float(value.numpy().reshape(())) == -1
    if isinstance(value, np.ndarray):
        return value.shape == (1, 1) and value.dtype.kind in "iuf" and value.item() == -1
    return False


def _group_by_score(groups, scores):
    """Stable order by group ascending, then score descending (equal scores, -0.0 and 0.0
    included, keep their order): one uint64 key sorted once, twice as fast as np.lexsort."""
    if len(groups) == 0:
        return np.zeros(0, np.int64)
    bits = (scores + _F32(0)).view(np.uint32)  # + 0 turns -0.0 into 0.0
    # float32 bits to an unsigned key of the same order (negatives: all bits flipped), reversed
    ascending = bits ^ np.where(bits >> 31, np.uint32(0xFFFFFFFF), np.uint32(0x80000000))
    group = (groups - groups.min()).astype(np.uint64)  # < 2**32: labels are int32
    return np.argsort((group << np.uint64(32)) | (~ascending).astype(np.uint64), kind="stable")


class _Evaluation:
    """Per-class positives and the (label, score, true-positive) entries of detections that
    count, in fluid's insertion order (batch, then row); the ingredients of one mAP."""

    def __init__(self, pos_labels, pos_counts, labels, scores, tps):
        self.pos_labels, self.pos_counts = pos_labels, pos_counts
        self.labels, self.scores, self.tps = labels, scores, tps

    @classmethod
    def concatenate(cls, parts):
        labels = np.concatenate([p.pos_labels for p in parts])
        counts = np.concatenate([p.pos_counts for p in parts])
        pos_labels, inverse = np.unique(labels, return_inverse=True)
        pos_counts = np.bincount(inverse.reshape(-1), counts, len(pos_labels)).astype(np.int64)
        return cls(pos_labels, pos_counts, *(np.concatenate([getattr(p, key) for p in parts])
                                             for key in ("labels", "scores", "tps")))

    def within(self, class_num):
        """The part fluid keeps in its state: labels in [0, class_num)."""
        keep_pos = (self.pos_labels >= 0) & (self.pos_labels < class_num)
        keep = (self.labels >= 0) & (self.labels < class_num)
        return _Evaluation(self.pos_labels[keep_pos], self.pos_counts[keep_pos],
                           self.labels[keep], self.scores[keep], self.tps[keep])

    def mean_ap(self, ap_version):
        """fluid's CalcMAP: float32 precision/recall, sums in fluid's order and precision."""
        # Per class, the entries by descending score, ties in insertion order (std::stable_sort).
        order = _group_by_score(self.labels, self.scores)
        labels, tps = self.labels[order], self.tps[order]
        starts = np.searchsorted(labels, self.pos_labels, "left")
        ends = np.searchsorted(labels, self.pos_labels, "right")
        total, count = _F32(0), 0
        for pos, start, end in zip(self.pos_counts.tolist(), starts.tolist(), ends.tolist()):
            # Fluid skips a class whose positive count equals background_label, which is always
            # 0 (never forwarded to the op): classes without positives are not in pos_labels.
            count += 1
            if start == end:  # positives but no detection: AP 0
                continue
            tp_sum = np.cumsum(tps[start:end], dtype=np.int64)
            precision = tp_sum.astype(_F32) / np.arange(1, end - start + 1).astype(_F32)
            recall = tp_sum.astype(_F32) / _F32(pos)
            if ap_version == "11point":
                # max precision over recall >= j/10 (a suffix, recall being sorted), compared
                # in double as fluid does; each max/11 is added to the total in float32.
                suffix_max = np.maximum.accumulate(precision[::-1])[::-1]
                firsts = np.searchsorted(recall.astype(np.float64),
                                         [j / 10. for j in range(10, -1, -1)], "left")
                for first in firsts.tolist():
                    best = suffix_max[first] if first < len(precision) else _F32(0)
                    total = _F32(total + _F32(best / _F32(11)))
            else:
                steps = np.abs(recall - np.concatenate([[_F32(0)], recall[:-1]]))
                counted = steps.astype(np.float64) > 1e-6
                # fluid: `float ap += precision * fabs(step)` where fabs is the double one, so
                # each step adds an exact double product to ap and rounds once to float32;
                # a float32 cumsum differs in the last bit. Terms: one per true positive.
                # A one-element float array rounds each double sum to float32 on assignment.
                terms = precision[counted].astype(np.float64) * steps[counted]
                average_precision = _c_array("f", [0.0])
                for term in terms.tolist():
                    average_precision[0] += term
                total = _F32(total + _F32(average_precision[0]))
        if count:
            total = _F32(total / _F32(count))
        return float(total)


def _evaluate_batch(detections, det_lengths, gt_box, gt_label, gt_lengths, difficult,
                    overlap_threshold, evaluate_difficult):
    """fluid's CalcTrueAndFalsePositive over one batch, vectorized over all images."""
    det_image = np.repeat(np.arange(len(det_lengths)), det_lengths)
    gt_image = np.repeat(np.arange(len(gt_lengths)), gt_lengths)
    det_label = _labels(detections[:, 0], "detections (column 0, label)")
    scores = detections[:, 1]

    counted = np.ones(len(gt_label), bool) if evaluate_difficult else ~difficult
    pos_labels, pos_counts = np.unique(gt_label[counted], return_counts=True)

    # The gts of each detection's (image, label) group, as slices of the gts sorted by group
    # (stable, so each group keeps fluid's gt order).
    offset = np.int64(2 ** 31)
    gt_key = (gt_image << 32) | (gt_label + offset)
    det_key = (det_image << 32) | (det_label + offset)
    gt_order = np.argsort(gt_key, kind="stable")
    sorted_keys = gt_key[gt_order]
    first = np.searchsorted(sorted_keys, det_key, "left")
    num_pairs = np.searchsorted(sorted_keys, det_key, "right") - first

    best_gt = np.zeros(len(detections), np.int64)
    best_iou = np.full(len(detections), -np.inf, _F32)
    det_rows = np.flatnonzero(num_pairs)
    # (detection, gt) pairs in chunks of about _PAIRS_PER_CHUNK: bounded memory however many
    # gts of one class an image has.
    pair_counts = num_pairs[det_rows]
    chunk = (np.cumsum(pair_counts) - pair_counts) // _PAIRS_PER_CHUNK
    for rows in np.split(det_rows, np.flatnonzero(np.diff(chunk)) + 1) if len(det_rows) else []:
        best_gt[rows], best_iou[rows] = _best_gts(detections[rows, 2:], first[rows],
                                                  num_pairs[rows], gt_order, gt_box)
    matched = best_iou > _F32(overlap_threshold)

    ignored = np.zeros(len(detections), bool)
    if not evaluate_difficult:
        ignored[matched] = difficult[best_gt[matched]]
    candidates = np.flatnonzero(matched & ~ignored)
    # Each gt goes to the first of its candidates by descending score (ties: row order).
    by_gt = candidates[_group_by_score(best_gt[candidates], scores[candidates])]
    gts = best_gt[by_gt]
    tps = np.zeros(len(detections), bool)
    if len(by_gt):
        tps[by_gt[np.concatenate([[True], gts[1:] != gts[:-1]])]] = True

    kept = ~ignored
    return _Evaluation(pos_labels.astype(np.int64), pos_counts.astype(np.int64),
                       det_label[kept], scores[kept], tps[kept])


def _best_gts(det_box, first, counts, gt_order, gt_box):
    """(index, IoU) of each detection's best gt among gt_order[first : first + counts]:
    fluid's scan keeps the first gt of largest IoU (strict >, so a NaN IoU never wins)."""
    pair_starts = np.cumsum(counts) - counts
    pair_det = np.repeat(np.arange(len(counts)), counts)
    pair_gt = gt_order[np.repeat(first - pair_starts, counts) + np.arange(int(counts.sum()))]
    iou = _jaccard(np.clip(det_box[pair_det], _F32(0), _F32(1)), gt_box[pair_gt])
    iou = np.where(np.isnan(iou), -np.inf, iou).astype(_F32)
    best = np.maximum.reduceat(iou, pair_starts)
    is_best = iou == np.repeat(best, counts)
    first_best = np.minimum.reduceat(np.where(is_best, np.arange(len(iou)), len(iou)),
                                     pair_starts)
    return pair_gt[first_best], best


def _jaccard(pred, gt):
    """fluid's JaccardOverlap in float32: 0 for disjoint boxes, no +1."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        disjoint = ((gt[:, 0] > pred[:, 2]) | (gt[:, 2] < pred[:, 0])
                    | (gt[:, 1] > pred[:, 3]) | (gt[:, 3] < pred[:, 1]))
        inter_min = np.maximum(pred[:, :2], gt[:, :2])
        inter_max = np.minimum(pred[:, 2:], gt[:, 2:])
        inter = (inter_max[:, 0] - inter_min[:, 0]) * (inter_max[:, 1] - inter_min[:, 1])
        area_pred = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
        area_gt = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
        iou = inter / (area_pred + area_gt - inter)
    return np.where(disjoint, _F32(0), iou)


class DetectionMAP(paddle.metric.Metric):
    """Mean average precision of detections, as fluid 1.8.5's ``fluid.metrics.DetectionMAP``.

    Args:
        class_num (int): number of classes; only labels in [0, class_num) are kept in the
            accumulated state (as fluid's op).
        background_label (int): accepted for fluid compatibility and ignored, as in fluid
            (its ``detection_map`` layer never passes it to the op, whose default 0 applies).
        overlap_threshold (float): a detection matches a gt when their IoU is > this (float32).
        evaluate_difficult (bool): whether difficult gts count; if False, they are not
            positives and a detection whose best gt is difficult is ignored.
        ap_version (str): 'integral' or '11point'.
    """

    def __init__(self, class_num, background_label=0, overlap_threshold=0.5,
                 evaluate_difficult=True, ap_version="integral"):
        super().__init__()
        if isinstance(class_num, bool) or not isinstance(class_num, numbers.Integral) \
                or class_num <= 0:
            raise ValueError(f"class_num: expected a positive int, received "
                             f"{_describe(class_num)}")
        if isinstance(background_label, bool) \
                or not isinstance(background_label, numbers.Integral):
            raise TypeError(f"background_label: expected an int, received "
                            f"{_describe(background_label)}")
        if isinstance(overlap_threshold, bool) \
                or not isinstance(overlap_threshold, numbers.Real):
            raise TypeError(f"overlap_threshold: expected a number in [0, 1], received "
                            f"{_describe(overlap_threshold)}")
        try:
            with np.errstate(over="ignore"):
                threshold = _F32(overlap_threshold)  # a float32 op attribute in fluid
        except OverflowError:  # an int beyond float64
            threshold = _F32(np.inf)
        if not (math.isfinite(threshold) and 0 <= threshold <= 1):
            raise ValueError(f"overlap_threshold: expected a number in [0, 1], received "
                             f"{overlap_threshold!r}")
        if not isinstance(evaluate_difficult, (bool, np.bool_)):
            raise TypeError(f"evaluate_difficult: expected a bool, received "
                            f"{_describe(evaluate_difficult)}")
        if not isinstance(ap_version, str) or ap_version not in _AP_VERSIONS:
            raise ValueError(f"ap_version: expected 'integral' or '11point', received "
                             f"{ap_version!r}")
        self.class_num = int(class_num)
        self.background_label = int(background_label)
        self.overlap_threshold = threshold
        self.evaluate_difficult = bool(evaluate_difficult)
        self.ap_version = ap_version
        self.reset()

    def reset(self):
        """Forget all batches (fluid's ``reset``: the next batch starts a new accumulation)."""
        self._kept = []       # in-range parts of the batches before the last (fluid's state)
        self._last = None     # the last batch, all labels (it counts in full once)
        self._accumulated = None

    def update(self, detections, gt_box, gt_label, *, detection_lengths, gt_lengths,
               difficult=None):
        """Add one batch; returns that batch's own mAP (fluid's ``cur_map``) as a float."""
        nothing_survived = _is_nothing_survived(detections)
        if nothing_survived:
            # detection_output's "nothing survived" [[-1]]; fluid's op refuses its shape.
            detections = np.zeros((0, 6), _F32)
        detections = _numeric(detections, "detections", 6)
        gt_box = _numeric(gt_box, "gt_box", 4)
        if not nothing_survived:
            det_lengths = _lengths(detection_lengths, "detection_lengths", len(detections),
                                   "detections")
        else:  # the -1 row counted for image 0, or not counted at all
            det_lengths = _lengths(detection_lengths, "detection_lengths", None)
            if det_lengths[1:].any() or det_lengths[0] > 1:
                raise ValueError(f"detection_lengths: expected [1, 0, ...] or zeros with "
                                 f"detection_output's [[-1]], received {det_lengths.tolist()}")
            det_lengths = np.zeros_like(det_lengths)
        gt_lens = _lengths(gt_lengths, "gt_lengths", len(gt_box), "gt_box")
        if len(gt_lens) != len(det_lengths):
            raise ValueError(f"gt_lengths: expected {len(det_lengths)} images (as "
                             f"detection_lengths), received {len(gt_lens)}")
        labels = _labels(_column(gt_label, "gt_label", len(gt_box)).astype(_F32), "gt_label")
        if difficult is None:
            is_difficult = np.zeros(len(gt_box), bool)
        else:
            flags = _column(difficult, "difficult", len(gt_box))
            if not np.isin(flags, (0, 1)).all():
                raise ValueError(f"difficult: expected 0/1 or bool flags, received "
                                 f"{flags[~np.isin(flags, (0, 1))][0].item()!r}")
            is_difficult = flags.astype(bool)

        batch = _evaluate_batch(detections, det_lengths, gt_box, labels, gt_lens,
                                is_difficult, self.overlap_threshold, self.evaluate_difficult)
        if self._last is not None:
            self._kept.append(self._last.within(self.class_num))
        self._last = batch
        self._accumulated = None
        return batch.mean_ap(self.ap_version)

    def accumulate(self):
        """mAP over all batches since construction or ``reset()`` (fluid's ``accum_map``);
        0.0 before the first batch."""
        if self._accumulated is None:
            if self._last is None:
                self._accumulated = 0.0
            else:
                if len(self._kept) > 1:  # concatenated once, not at every call
                    self._kept = [_Evaluation.concatenate(self._kept)]
                whole = _Evaluation.concatenate(self._kept + [self._last])
                self._accumulated = whole.mean_ap(self.ap_version)
        return self._accumulated

    def name(self):
        return "mAP"
