"""paddle_ssd_op.DetectionMAP against fluid 1.8.5: the golden cases of
tests/data/golden_detection/detection_map (cur_map, accum_map, reset), with NumPy and paddle
tensor inputs; a per-image loop reference written straight from fluid's C++
(detection_map_op.h) against the vectorized metric on random inputs; fluid's quirks on small
hand-made batches; and the argument errors."""
import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddle_ssd_op.detection_map import DetectionMAP

GOLDEN_DIR = Path(__file__).parent / "data" / "golden_detection" / "detection_map"
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.npz"))
F32 = np.float32


# ---------------------------------------------------------------------------------------------
# A per-image loop reference, statement by statement from fluid 1.8's detection_map_op.h (CPU
# kernel, float32) and metrics.DetectionMAP (a stateless op for cur_map, a stateful one for
# accum_map). Python's stable sort stands for std::sort, which libstdc++ runs as an insertion
# sort (stable) on groups of at most 16 detections.

def _jaccard(b1, b2):
    if b2[0] > b1[2] or b2[2] < b1[0] or b2[1] > b1[3] or b2[3] < b1[1]:
        return F32(0)
    inter_w = min(b1[2], b2[2]) - max(b1[0], b2[0])
    inter_h = min(b1[3], b2[3]) - max(b1[1], b2[1])
    inter = inter_w * inter_h
    area1 = (b1[2] - b1[0]) * (b1[3] - b1[1])
    area2 = (b2[2] - b2[0]) * (b2[3] - b2[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area1 + area2 - inter)


def _true_false_positives(batch, evaluate_difficult, threshold, pos_count, true_pos):
    """CalcTrueAndFalsePositive; true_pos[label] holds (score, is_tp) (fluid's false_pos list
    is its complement)."""
    det, gt_box, gt_label, difficult = (batch["detections"], batch["gt_box"],
                                        batch["gt_label"], batch["difficult"])
    d_end, g_end = np.cumsum(batch["detection_lengths"]), np.cumsum(batch["gt_lengths"])
    for n in range(len(d_end)):
        gts = {}
        for i in range(g_end[n] - batch["gt_lengths"][n], g_end[n]):
            gts.setdefault(int(gt_label[i]), []).append((gt_box[i], bool(difficult[i])))
        dets = {}
        for i in range(d_end[n] - batch["detection_lengths"][n], d_end[n]):
            dets.setdefault(int(det[i, 0]), []).append((det[i, 1], det[i, 2:]))
        for label, boxes in gts.items():
            count = sum(1 for _, hard in boxes if evaluate_difficult or not hard)
            if count:
                pos_count[label] = pos_count.get(label, 0) + count
        for label in sorted(dets):
            preds = dets[label]
            if label not in gts:
                true_pos.setdefault(label, []).extend((score, 0) for score, _ in preds)
                continue
            boxes = gts[label]
            visited = [False] * len(boxes)
            for score, box in sorted(preds, key=lambda p: -p[0]):
                clipped = np.clip(box, F32(0), F32(1))
                max_overlap, max_idx = F32(-1), 0
                for j, (gt, _) in enumerate(boxes):
                    overlap = _jaccard(clipped, gt)
                    if overlap > max_overlap:
                        max_overlap, max_idx = overlap, j
                if max_overlap > threshold:
                    if evaluate_difficult or not boxes[max_idx][1]:
                        true_pos.setdefault(label, []).append((score, int(not visited[max_idx])))
                        visited[max_idx] = True
                else:
                    true_pos.setdefault(label, []).append((score, 0))


def _calc_map(ap_version, pos_count, true_pos):
    """CalcMAP with background_label 0 (fluid never forwards another one)."""
    total, count = F32(0), 0
    for label in sorted(pos_count):
        num_pos = pos_count[label]
        if num_pos == 0:
            continue
        count += 1
        if label not in true_pos:
            continue
        flags = [flag for _, flag in sorted(true_pos[label], key=lambda p: -p[0])]
        tp_sum, precision, recall = 0, [], []
        for i, flag in enumerate(flags):
            tp_sum += flag
            precision.append(F32(tp_sum) / F32(i + 1))
            recall.append(F32(tp_sum) / F32(num_pos))
        if ap_version == "11point":
            max_precisions = [F32(0)] * 11
            start = len(flags) - 1
            for j in range(10, -1, -1):
                for i in range(start, -1, -1):
                    if float(recall[i]) < j / 10.:
                        start = i
                        if j > 0:
                            max_precisions[j - 1] = max_precisions[j]
                        break
                    if max_precisions[j] < precision[i]:
                        max_precisions[j] = precision[i]
            for j in range(10, -1, -1):
                total = F32(total + max_precisions[j] / F32(11))
        else:
            average, prev = F32(0), F32(0)
            for i in range(len(flags)):
                step = abs(recall[i] - prev)
                if float(step) > 1e-6:  # fabs is the double one: one rounding per step
                    average = F32(float(average) + float(precision[i]) * float(step))
                prev = recall[i]
            total = F32(total + average)
    return float(F32(total / F32(count))) if count else 0.0


def reference_maps(batches, class_num, overlap_threshold=0.5, evaluate_difficult=True,
                   ap_version="integral", **_):
    """(cur_map, accum_map) per batch, as fluid.metrics.DetectionMAP fetches them."""
    threshold = F32(overlap_threshold)
    cur, accum, state = [], [], None
    for batch in batches:
        pos_count, true_pos = {}, {}
        _true_false_positives(batch, evaluate_difficult, threshold, pos_count, true_pos)
        cur.append(_calc_map(ap_version, pos_count, true_pos))
        if state is not None:  # GetInputPos: every class in [0, class_num), state first
            pos_count, true_pos = {}, {}
            for label in range(class_num):
                pos_count[label] = state[0].get(label, 0)
                if state[1].get(label):
                    true_pos[label] = list(state[1][label])
            _true_false_positives(batch, evaluate_difficult, threshold, pos_count, true_pos)
        accum.append(_calc_map(ap_version, pos_count, true_pos))
        # GetOutputPos keeps classes in [0, class_num) only.
        state = ({k: v for k, v in pos_count.items() if 0 <= k < class_num},
                 {k: v for k, v in true_pos.items() if 0 <= k < class_num})
    return cur, accum


# ---------------------------------------------------------------------------------------------
# golden cases

def _golden(path):
    data = np.load(path)
    batches = []
    for i in range(int(data["num_batches"])):
        batch = {key: data[f"b{i}_{key}"] for key in
                 ("detections", "detection_lengths", "gt_box", "gt_label", "gt_lengths")}
        batch["difficult"] = data[f"b{i}_difficult"] if data["has_difficult"] else None
        batches.append(batch)
    return json.loads(str(data["attrs"])), batches, data["cur_map"], data["accum_map"]


def _update(metric, batch, as_tensor):
    convert = paddle.to_tensor if as_tensor else (lambda x: x)
    difficult = batch["difficult"]
    return metric.update(
        convert(batch["detections"]), convert(batch["gt_box"]), convert(batch["gt_label"]),
        detection_lengths=convert(batch["detection_lengths"]),
        gt_lengths=convert(batch["gt_lengths"]),
        difficult=None if difficult is None else convert(difficult))


def _assert_close(actual, expected):
    np.testing.assert_allclose(np.float32(actual), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("inputs", ["numpy", "tensor", "static"])
@pytest.mark.parametrize("path", GOLDEN_FILES, ids=[p.stem for p in GOLDEN_FILES])
def test_golden(path, inputs):
    """NumPy arrays, dygraph tensors, and NumPy arrays in static mode (as fetched from a static
    program: the metric runs on the host in any mode)."""
    if inputs == "static":
        paddle.enable_static()
    as_tensor = inputs == "tensor"
    attrs, batches, cur_map, accum_map = _golden(path)
    for batch, expected in zip(batches, cur_map):
        fresh = DetectionMAP(**attrs)
        _assert_close(_update(fresh, batch, as_tensor), expected)
        _assert_close(fresh.accumulate(), expected)
    metric = DetectionMAP(**attrs)
    accumulated = []
    for batch, expected_cur in zip(batches, cur_map):
        _assert_close(_update(metric, batch, as_tensor), expected_cur)
        accumulated.append(metric.accumulate())
    _assert_close(accumulated, accum_map)
    metric.reset()
    _assert_close(metric.accumulate(), 0.0)
    _assert_close(_update(metric, batches[0], as_tensor), cur_map[0])
    _assert_close(metric.accumulate(), cur_map[0])


def test_golden_set_present():
    assert len(GOLDEN_FILES) == 60


@pytest.mark.parametrize("path", GOLDEN_FILES[:12], ids=[p.stem for p in GOLDEN_FILES[:12]])
def test_reference_matches_golden(path):
    """The loop reference itself reproduces fluid (so agreeing with it means something)."""
    attrs, batches, cur_map, accum_map = _golden(path)
    batches = [dict(b, difficult=np.zeros(len(b["gt_box"])) if b["difficult"] is None
                    else b["difficult"].reshape(-1), gt_label=b["gt_label"].reshape(-1))
               for b in batches]
    cur, accum = reference_maps(batches, **attrs)
    _assert_close(cur, cur_map)
    _assert_close(accum, accum_map)


# ---------------------------------------------------------------------------------------------
# random inputs: vectorized metric == loop reference (bit for bit)

def _random_batch(rng, class_num, ties, wild):
    """1-4 images: jittered true detections, duplicates, wrong classes, false positives, boxes
    outside [0, 1]; with `wild`, labels outside [0, class_num) and zero-area boxes."""
    images = int(rng.integers(1, 5))
    gt_lengths = rng.integers(0, 6, images)
    det_lengths = rng.integers(0, 15, images)
    low, high = (-1, class_num + 2) if wild else (0, class_num)
    boxes, labels, dets = [], [], []
    for n in range(images):
        centre = rng.uniform(-0.1, 1.1, (gt_lengths[n], 2))
        size = rng.uniform(0, 0.6, (gt_lengths[n], 2))
        if wild and gt_lengths[n] and rng.random() < 0.2:
            size[0] = 0
        box = np.concatenate([centre - size / 2, centre + size / 2], 1)
        if gt_lengths[n] > 1 and rng.random() < 0.3:
            box[1] = box[0]  # two equal gts: an IoU tie
        label = rng.integers(low, high, gt_lengths[n])
        if rng.random() < 0.5:
            label[:] = label[0] if len(label) else 0
        boxes.append(box)
        labels.append(label)
        for _ in range(det_lengths[n]):
            if gt_lengths[n] and rng.random() < 0.7:
                j = rng.integers(gt_lengths[n])
                det_box = box[j] + rng.normal(0, rng.choice([0, 0.02, 0.1]), 4)
                det_label = label[j] if rng.random() < 0.85 else rng.integers(low, high)
            else:
                centre, size = rng.uniform(0, 1, 2), rng.uniform(0, 0.5, 2)
                det_box = np.concatenate([centre - size / 2, centre + size / 2])
                det_label = rng.integers(low, high)
            dets.append([det_label, 0, *det_box])
    dets = np.array(dets, F32).reshape(-1, 6)
    dets[:, 1] = (rng.integers(0, 6, len(dets)) / 5 if ties
                  else rng.permutation(len(dets)) / max(len(dets), 1) + rng.uniform(0, 1e-3))
    return dict(detections=dets, detection_lengths=det_lengths,
                gt_box=np.concatenate(boxes).astype(F32).reshape(-1, 4),
                gt_label=np.concatenate(labels).astype(F32), gt_lengths=gt_lengths,
                difficult=(rng.random(int(gt_lengths.sum())) < 0.3).astype(F32))


def _random_case(rng, ties=False):
    class_num = int(rng.integers(1, 8))
    attrs = dict(class_num=class_num, background_label=int(rng.choice([0, 1, -1])),
                 overlap_threshold=float(rng.choice([0.0, 0.3, 0.5, 0.55, 0.7, 1.0])),
                 evaluate_difficult=bool(rng.random() < 0.5),
                 ap_version=str(rng.choice(["integral", "11point"])))
    wild = bool(rng.random() < 0.5)
    return attrs, [_random_batch(rng, class_num, ties, wild)
                   for _ in range(int(rng.integers(1, 5)))]


def _metric_maps(attrs, batches):
    metric, cur, accum = DetectionMAP(**attrs), [], []
    for batch in batches:
        cur.append(DetectionMAP(**attrs).update(**_update_args(batch)))
        metric.update(**_update_args(batch))
        accum.append(metric.accumulate())
    return cur, accum


def _update_args(batch):
    return dict(detections=batch["detections"], gt_box=batch["gt_box"],
                gt_label=batch["gt_label"], detection_lengths=batch["detection_lengths"],
                gt_lengths=batch["gt_lengths"], difficult=batch["difficult"])


@pytest.mark.parametrize("seed", range(4))
def test_random_against_reference(seed):
    rng = np.random.default_rng([20240, seed])
    for _ in range(40):
        attrs, batches = _random_case(rng)
        assert _metric_maps(attrs, batches) == reference_maps(batches, **attrs), attrs


def test_pairs_in_chunks(monkeypatch):
    """The (detection, gt) pairs are evaluated in chunks (bounded memory): tiny chunks too."""
    import paddle_ssd_op.detection_map as module

    monkeypatch.setattr(module, "_PAIRS_PER_CHUNK", 3)
    rng = np.random.default_rng(31)
    for _ in range(30):
        attrs, batches = _random_case(rng)
        assert _metric_maps(attrs, batches) == reference_maps(batches, **attrs), attrs


@pytest.mark.slow
def test_random_against_reference_long():
    rng = np.random.default_rng(777)
    for _ in range(2000):
        attrs, batches = _random_case(rng, ties=bool(rng.random() < 0.3))
        assert _metric_maps(attrs, batches) == reference_maps(batches, **attrs), attrs


def test_score_ties_follow_input_order():
    """Equal scores rank in input order (batch, then row), as fluid whenever an image has at
    most 16 detections of the class (beyond that, fluid's std::sort order is unspecified)."""
    rng = np.random.default_rng(99)
    for _ in range(60):
        attrs, batches = _random_case(rng, ties=True)
        assert _metric_maps(attrs, batches) == reference_maps(batches, **attrs), attrs


# ---------------------------------------------------------------------------------------------
# fluid's quirks on hand-made batches (expected values from fluid 1.8.5)

def _hand_batches():
    first = dict(
        detections=np.array([[1, .9, .1, .1, .5, .5], [1, .8, .1, .1, .5, .5],
                             [2, .7, .2, .2, .6, .6], [7, .95, 0, 0, .3, .3]], F32),
        detection_lengths=[2, 2],
        gt_box=np.array([[.1, .1, .5, .5], [.2, .2, .6, .6], [.5, .5, .9, .9], [0, 0, .3, .3]],
                        F32),
        gt_label=np.array([1, 1, 2, 7], F32), gt_lengths=[2, 2])
    second = dict(detections=np.array([[1, .6, .1, .1, .5, .5], [2, .5, .7, .7, .9, .9]], F32),
                  detection_lengths=[1, 1],
                  gt_box=np.array([[.1, .1, .5, .5], [.3, .3, .4, .4]], F32),
                  gt_label=np.array([1, 2], F32), gt_lengths=[1, 1])
    return [first, second, first]


@pytest.mark.parametrize("background_label", [0, 3, -1])
@pytest.mark.parametrize("class_num,accum_map", [(3, [0.5, 0.2777777910232544,
                                                      0.5066666603088379]),
                                                 (10, [0.5, 0.5185185074806213,
                                                       0.5066666603088379])])
def test_labels_outside_class_num_and_background_ignored(class_num, accum_map,
                                                          background_label):
    """Label 7 counts in its own batch, but fluid's state keeps labels in [0, class_num) only;
    background_label is never forwarded to fluid's op (values of fluid 1.8.5)."""
    metric = DetectionMAP(class_num, background_label=background_label)
    cur, accum = [], []
    for batch in _hand_batches():
        cur.append(metric.update(**batch))
        accum.append(metric.accumulate())
    assert cur == [0.5, 0.5, 0.5]
    assert accum == accum_map


def test_strict_iou_threshold():
    """IoU exactly 0.5 at threshold 0.5 is a miss; a detection is clipped to [0, 1] first."""
    gt = dict(gt_box=np.array([[0, 0, .5, 1]], F32), gt_label=[[1]], gt_lengths=[1])
    half = np.array([[1, .9, .25, 0, .75, 1]], F32)  # IoU 1/3 with gt [0, .5]: .25 / .75
    exact = np.array([[1, .9, 0, 0, 1, 1]], F32)  # IoU exactly 0.5
    poking = np.array([[1, .9, -1, 0, .5, 1]], F32)  # clipped to the gt itself
    assert DetectionMAP(2, overlap_threshold=0.3).update(half, detection_lengths=[1], **gt) == 1
    assert DetectionMAP(2).update(exact, detection_lengths=[1], **gt) == 0
    assert DetectionMAP(2, overlap_threshold=0.49).update(exact, detection_lengths=[1],
                                                          **gt) == 1
    assert DetectionMAP(2).update(poking, detection_lengths=[1], **gt) == 1


def test_difficult_best_gt_ignores_the_detection():
    """With evaluate_difficult=False a detection whose best gt is difficult is neither TP nor
    FP, even when a non-difficult gt also overlaps it enough; a detection whose best gt is
    taken is a FP, even when another gt overlaps it enough."""
    gt_box = np.array([[.1, .1, .5, .5], [.1, .1, .52, .52]], F32)  # IoU 0.907
    args = dict(gt_box=gt_box, gt_label=[1, 1], gt_lengths=[2], detection_lengths=[1])
    on_gt0 = np.array([[1, .9, .1, .1, .5, .5]], F32)
    # ignored: class 1 has 1 positive (gt 1) and no detection left, AP 0 (not 1 via gt 1)
    assert DetectionMAP(2, evaluate_difficult=False).update(on_gt0, difficult=[[1], [0]],
                                                            **args) == 0
    assert DetectionMAP(2).update(on_gt0, difficult=[1, 0], **args) == 0.5
    assert DetectionMAP(2, evaluate_difficult=False).update(
        on_gt0, difficult=np.array([False, True]), **args) == 1
    twice = np.array([[1, .9, .1, .1, .5, .5], [1, .8, .1, .1, .5, .5]], F32)
    args["detection_lengths"] = [2]
    # the second is a FP (its best gt, gt 0, is taken): precision 1, 1/2 at recall 1/2
    assert DetectionMAP(2).update(twice, **args) == 0.5


def test_eleven_point_recall_float32():
    """Recall 7/10 is 0.699999988 in float32, below the 0.7 point (fluid compares in double)."""
    gt_box = np.array([[i / 10, 0, i / 10 + .05, .05] for i in range(10)], F32)
    dets = np.concatenate([np.ones((7, 1)), np.linspace(.9, .3, 7)[:, None], gt_box[:7]], 1)
    args = dict(gt_box=gt_box, gt_label=np.ones(10), gt_lengths=[10], detection_lengths=[7])
    # precision 1 for recall points 0 .. 0.6 only: 7/11 (0.7 would give 8/11)
    assert DetectionMAP(2, ap_version="11point").update(dets.astype(F32), **args) == \
        pytest.approx(7 / 11, abs=1e-7)
    assert DetectionMAP(2).update(dets.astype(F32), **args) == pytest.approx(0.7, abs=1e-7)


def test_images_without_gt_or_detections():
    """Detections of an image without gt are FP; a batch with no detection, or no gt at all,
    is evaluated (fluid's DetectionMAP refuses a batch without gt: its concat fails)."""
    det = np.array([[1, .9, .1, .1, .5, .5], [1, .8, .1, .1, .5, .5]], F32)
    gt = dict(gt_box=np.array([[.1, .1, .5, .5]], F32), gt_label=[1])
    assert DetectionMAP(2).update(det, detection_lengths=[1, 1], gt_lengths=[1, 0], **gt) == 1
    # the better detection is in the image without gt: FP first, precision 1/2 at recall 1
    assert DetectionMAP(2).update(det, detection_lengths=[1, 1], gt_lengths=[0, 1], **gt) == 0.5
    assert DetectionMAP(2).update(np.zeros((0, 6)), detection_lengths=[0, 0],
                                  gt_lengths=[1, 0], **gt) == 0
    metric = DetectionMAP(2)
    assert metric.update(det, np.zeros((0, 4)), np.zeros(0), detection_lengths=[2],
                         gt_lengths=[0]) == 0
    assert metric.update(det[:1], detection_lengths=[1], gt_lengths=[1], **gt) == 1
    # equal scores rank by batch: FP .9 (batch 0), TP .9, FP .8: AP 1/2
    assert metric.accumulate() == 0.5


@pytest.mark.parametrize("lengths", [[1, 0, 0], [0, 0, 0]])
@pytest.mark.parametrize("as_tensor", [False, True], ids=["numpy", "tensor"])
def test_nothing_survived_output(lengths, as_tensor):
    """detection_output's [[-1]] ("no detection in any image"; fluid's op refuses its shape)
    means no detections, whether its row is counted for image 0 or not."""
    convert = paddle.to_tensor if as_tensor else np.asarray
    gt = dict(gt_box=np.array([[.1, .1, .5, .5], [.2, .2, .6, .6]], F32), gt_label=[1, 2],
              gt_lengths=[1, 0, 1])
    metric = DetectionMAP(3)
    assert metric.update(convert(np.array([[-1]], F32)), detection_lengths=convert(lengths),
                         **gt) == 0
    assert metric.update(np.array([[1, .5, .1, .1, .5, .5]], F32),
                         detection_lengths=[1, 0, 0], **gt) == 0.5
    assert metric.accumulate() == 0.25
    with pytest.raises(ValueError, match="detection_lengths"):
        metric.update(np.array([[-1]], F32), detection_lengths=[0, 1, 0], **gt)


def test_metric_interface():
    metric = DetectionMAP(3)
    assert isinstance(metric, paddle.metric.Metric)
    assert metric.name() == "mAP"
    assert metric.accumulate() == 0.0


# ---------------------------------------------------------------------------------------------
# argument errors

GOOD = dict(detections=np.array([[1, .9, .1, .1, .5, .5]], F32), gt_box=np.array(
    [[.1, .1, .5, .5], [.2, .2, .4, .4]], F32), gt_label=np.array([[1], [2]], F32),
    detection_lengths=[1, 0], gt_lengths=[1, 1], difficult=[[0], [1]])


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(class_num=0), ValueError, "class_num: expected a positive int, received 0"),
    (dict(class_num=2.0), ValueError, "class_num: expected a positive int"),
    (dict(class_num=True), ValueError, "class_num"),
    (dict(class_num=3, background_label=0.5), TypeError, "background_label"),
    (dict(class_num=3, overlap_threshold=1.5), ValueError,
     r"overlap_threshold: expected a number in \[0, 1\], received 1.5"),
    (dict(class_num=3, overlap_threshold=-0.1), ValueError, "overlap_threshold"),
    (dict(class_num=3, overlap_threshold=float("nan")), ValueError, "overlap_threshold"),
    (dict(class_num=3, overlap_threshold=1e39), ValueError, "overlap_threshold"),
    (dict(class_num=3, overlap_threshold="0.5"), TypeError, "overlap_threshold"),
    (dict(class_num=3, evaluate_difficult=1), TypeError, "evaluate_difficult"),
    (dict(class_num=3, ap_version="11-point"), ValueError,
     "ap_version: expected 'integral' or '11point', received '11-point'"),
    (dict(class_num=3, overlap_threshold=10 ** 400), ValueError, "overlap_threshold"),
    (dict(class_num=3, ap_version=np.array(["integral"])), ValueError, "ap_version: expected"),
    (dict(class_num=3, ap_version=np.array(["integral", "11point"])), ValueError,
     "ap_version: expected"),
])
def test_constructor_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        DetectionMAP(**kwargs)


def _bad(**changes):
    return dict(GOOD, **changes)


@pytest.mark.parametrize("kwargs,error,message", [
    (_bad(detections=GOOD["detections"][:, :5]), ValueError,
     r"detections: expected shape \[rows, 6\], received \[1, 5\]"),
    (_bad(detections=GOOD["detections"][0]), ValueError, "detections: expected shape"),
    (_bad(detections=np.array([[1, np.nan, .1, .1, .5, .5]])), ValueError,
     "detections: expected finite values"),
    (_bad(detections=np.array([[1, .9, .1, np.inf, .5, .5]])), ValueError, "detections"),
    (_bad(detections=np.array([[1.5, .9, .1, .1, .5, .5]])), ValueError,
     r"detections \(column 0, label\): expected integer class ids"),
    (_bad(detections=np.array([[3e9, .9, .1, .1, .5, .5]])), ValueError, "int32 range"),
    (_bad(detections=np.array([["a"] * 6])), TypeError, "detections: expected a real numeric"),
    (_bad(detections=np.ones((1, 6), bool)), TypeError, "detections"),
    (_bad(detections="x"), TypeError, "detections: expected a NumPy array"),
    (_bad(gt_box=GOOD["gt_box"][:, :3]), ValueError, r"gt_box: expected shape \[rows, 4\]"),
    (_bad(gt_box=np.array([[.1, .1, .5, .5], [np.nan, .2, .4, .4]])), ValueError,
     "gt_box: expected finite values, received NaN or inf at row 1"),
    (_bad(gt_label=np.array([1, 2, 3])), ValueError,
     r"gt_label: expected shape \[2, 1\] or \[2\], received \[3\]"),
    (_bad(gt_label=np.array([[1], [2]]).T), ValueError, "gt_label: expected shape"),
    (_bad(gt_label=np.array([1, 2.5])), ValueError, "gt_label: expected integer class ids"),
    (_bad(gt_label=np.array([1, np.nan])), ValueError, "gt_label"),
    (_bad(difficult=[0, 2]), ValueError, "difficult: expected 0/1 or bool flags, received 2"),
    (_bad(difficult=[0, 1, 1]), ValueError, "difficult: expected shape"),
    (_bad(detection_lengths=[1]), ValueError,
     r"gt_lengths: expected 1 images \(as detection_lengths\), received 2"),
    (_bad(detection_lengths=[1, 0], gt_lengths=[2]), ValueError, "gt_lengths: expected 2"),
    (_bad(detection_lengths=[2, -1]), ValueError,
     r"detection_lengths: expected non-negative rows per image, received \[2, -1\]"),
    (_bad(detection_lengths=[1, 1]), ValueError,
     r"detection_lengths: expected rows per image summing to 1"),
    (_bad(gt_lengths=[3, -1]), ValueError, "gt_lengths: expected non-negative"),
    (_bad(gt_lengths=[1, 0]), ValueError, "gt_lengths: expected rows per image summing to 2"),
    (_bad(gt_lengths=[1.0, 1.0]), TypeError, "gt_lengths: expected integers"),
    (_bad(detection_lengths=[], gt_lengths=[]), ValueError,
     "detection_lengths: expected a non-empty 1-D list"),
    (_bad(detection_lengths=[[1, 0]]), ValueError, "detection_lengths: expected a non-empty"),
    (_bad(detection_lengths=None), TypeError, "detection_lengths"),
    # lengths whose int64 sum wraps around to the row count (np.repeat then corrupted the heap)
    (_bad(detection_lengths=[2 ** 62] * 4 + [1], gt_lengths=[0] * 4 + [2]), ValueError,
     "detection_lengths: expected rows per image summing to 1"),
    (_bad(detection_lengths=[0] * 4 + [1], gt_lengths=[2 ** 62] * 4 + [2]), ValueError,
     "gt_lengths: expected rows per image summing to 2"),
    (_bad(detection_lengths=np.array([2 ** 64 - 1, 2], np.uint64)), ValueError,
     r"detection_lengths: expected rows per image <= 9223372036854775807, received "
     r"\[18446744073709551615, 2\]"),
    (_bad(detections=np.array([[-1]], F32), detection_lengths=np.array([2 ** 64 - 1, 0],
                                                                       np.uint64)),
     ValueError, "detection_lengths: expected rows per image <= 9223372036854775807"),
])
def test_update_errors(kwargs, error, message):
    metric = DetectionMAP(3)
    with pytest.raises(error, match=message):
        metric.update(**kwargs)
    assert metric.accumulate() == 0.0  # a refused batch leaves no trace
    assert metric.update(**GOOD) == 0.5


def test_bfloat16_tensors_are_read_by_value():
    """A bfloat16 tensor's numpy() is its raw bits as uint16; the metric reads the values."""
    keys = ("detections", "gt_box", "gt_label")
    as_bf16 = {key: paddle.to_tensor(GOOD[key]).astype("bfloat16") for key in keys}
    values = {key: tensor.astype("float32").numpy() for key, tensor in as_bf16.items()}
    expected = DetectionMAP(3).update(**dict(GOOD, **values))
    assert expected == 0.5
    assert DetectionMAP(3).update(**dict(GOOD, **as_bf16)) == expected


def test_lengths_are_keyword_only():
    with pytest.raises(TypeError):
        DetectionMAP(3).update(GOOD["detections"], GOOD["gt_box"], GOOD["gt_label"], [1, 0],
                               [1, 1])


def test_static_variable_refused():
    paddle.enable_static()
    with paddle.static.program_guard(paddle.static.Program(), paddle.static.Program()):
        detections = paddle.static.data("detections", [None, 6], "float32")
        with pytest.raises(TypeError, match="detections: .*fetch it first"):
            DetectionMAP(3).update(detections, GOOD["gt_box"], GOOD["gt_label"],
                                   detection_lengths=[1, 0], gt_lengths=[1, 1])
