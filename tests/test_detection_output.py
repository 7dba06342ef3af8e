"""paddle_ssd_op.detection_output against the real fluid 1.8.5 (tests/data/golden_detection/
detection_output): every golden case in dygraph and in a static program (PIR on Paddle 3.x,
legacy with LoD on Paddle 2.6), both values of return_index, rois_num and the all-empty [[-1]];
the keyword-only options against a NumPy reference of the algorithm; argument errors; and a saved
inference model run by Paddle Inference in a process without paddle_ssd_op."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

import paddle_ssd_op  # noqa: F401  -- the package, as users import it
from paddle_ssd_op import detection_output

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden_detection" / "detection_output"
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.npz"))
INPUTS = ("loc", "scores", "prior_box", "prior_box_var")
RTOL, ATOL = 1e-5, 1e-6


class Golden:
    """One case of the real fluid 1.8.5 detection_output (see the directory's README.md)."""

    def __init__(self, path):
        d = np.load(path)
        self.inputs = {k: d[k] for k in INPUTS}
        self.attrs = json.loads(str(d["attrs"]))
        self.all_empty = bool(d["all_empty"])
        self.out, self.out_lod = d["out"], d["out_lod"].tolist()
        self.out_ri, self.out_ri_lod = d["out_ri"], d["out_ri_lod"].tolist()
        self.index = d["index"]
        # Our rois_num counts detections: all zeros when nothing survives (the README allows it).
        self.rois_num = np.zeros_like(d["rois_num"]) if self.all_empty else d["rois_num"]


golden_params = pytest.mark.parametrize("path", GOLDEN_FILES, ids=[p.stem for p in GOLDEN_FILES])


def assert_rows(out, expected, what):
    """Same shape, labels exactly, scores and boxes within the tolerance, in the same order."""
    assert out.shape == expected.shape, f"{what}: shape {out.shape} != {expected.shape}"
    if expected.shape[1] == 6:
        np.testing.assert_array_equal(out[:, 0], expected[:, 0], err_msg=f"{what}: labels")
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL, err_msg=what)


def run_dygraph(inputs, **kwargs):
    """Results as NumPy arrays (no LoD in dygraph)."""
    tensors = [paddle.to_tensor(inputs[k]) for k in INPUTS]
    results = detection_output(*tensors, **kwargs)
    results = results if isinstance(results, tuple) else (results,)
    return [r.numpy() for r in results], None


def static_program(shapes, calls, dtype="float32"):
    """A program of one or more detection_output calls on fed inputs: (main, feed vars, the
    results of each call)."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        feeds = [paddle.static.data(k, shapes[k], dtype) for k in INPUTS]
        results = []
        for kwargs in calls:
            r = detection_output(*feeds, **kwargs)
            results.append(list(r) if isinstance(r, tuple) else [r])
    return main, feeds, results


def run_static_calls(inputs, calls):
    """Each call's results as NumPy arrays, and their LoDs (None in PIR programs)."""
    paddle.enable_static()
    try:
        legacy = not _pir_static()
        main, _, results = static_program({k: list(v.shape) for k, v in inputs.items()}, calls,
                                          str(inputs["loc"].dtype))
        fetch = [x for r in results for x in r]
        # A LoD output cannot be fetched as NumPy (as in fluid): fetch the tensors.
        values = paddle.static.Executor(paddle.CPUPlace()).run(
            main, feed=inputs, fetch_list=fetch, return_numpy=False)
    finally:
        paddle.disable_static()
    arrays = [np.array(v) for v in values]
    lods = [v.lod() for v in values] if legacy else [None] * len(values)
    grouped, at = [], 0
    for r in results:
        grouped.append((arrays[at:at + len(r)], lods[at:at + len(r)]))
        at += len(r)
    return grouped


def run_static(inputs, **kwargs):
    arrays, lods = run_static_calls(inputs, [kwargs])[0]
    return arrays, lods[0]


def _pir_static():
    in_pir = getattr(paddle.framework, "in_pir_mode", None)
    return bool(in_pir and in_pir())


RUNNERS = {"dygraph": run_dygraph, "static": run_static}


def check_golden(case, results, return_index, return_rois_num):
    """One call's results (NumPy arrays and LoDs, None in dygraph and PIR) against fluid's."""
    arrays, lods = results
    assert len(arrays) == 1 + return_index + return_rois_num
    out, lod = arrays[0], lods[0]
    if return_index:
        assert_rows(out, case.out_ri, "out (return_index=True)")
        assert arrays[1].dtype == np.int32
        np.testing.assert_array_equal(arrays[1], case.index, err_msg="index")
        expected_lod = case.out_ri_lod
    else:
        assert_rows(out, case.out, "out")
        if case.all_empty:
            np.testing.assert_array_equal(out, [[-1.0]])
        expected_lod = case.out_lod
    if return_rois_num:
        assert arrays[-1].dtype == np.int32
        np.testing.assert_array_equal(arrays[-1], case.rois_num, err_msg="rois_num")
    if lod is not None:  # legacy static programs: fluid's LoD on out (and index)
        assert lod == [expected_lod], f"out LoD {lod} != {[expected_lod]}"
        if return_index:
            assert lods[1] == [expected_lod], f"index LoD {lods[1]} != {[expected_lod]}"


FORMS = [(ri, rn) for ri in (False, True) for rn in (False, True)]


@golden_params
def test_golden_dygraph(path):
    case = Golden(path)
    for ri, rn in FORMS:
        arrays, _ = run_dygraph(case.inputs, **case.attrs, return_index=ri, return_rois_num=rn)
        check_golden(case, (arrays, [None] * len(arrays)), ri, rn)


@golden_params
def test_golden_static(path):
    """One program holding the four forms of the call; in Paddle 2.6 a legacy program whose
    outputs carry LoD (fluid's own NMS ops without rois_num, multiclass_nms3 with it)."""
    case = Golden(path)
    calls = [dict(case.attrs, return_index=ri, return_rois_num=rn) for ri, rn in FORMS]
    results = run_static_calls(case.inputs, calls)
    for (ri, rn), result in zip(FORMS, results):
        if not paddle.__version__.startswith("3."):
            assert result[1][0] is not None, "legacy programs must give out a LoD"
        check_golden(case, result, ri, rn)


@pytest.mark.parametrize("mode", sorted(RUNNERS))
def test_return_structure(mode):
    """fluid's returns: out alone, (out, index); rois_num last when asked for."""
    case = Golden(GOLDEN_FILES[5])
    run = RUNNERS[mode]
    assert len(run(case.inputs, **case.attrs)[0]) == 1
    (out, index), _ = run(case.inputs, **case.attrs, return_index=True)
    assert_rows(out, case.out_ri, "out")
    np.testing.assert_array_equal(index, case.index)
    (out, rois_num), _ = run(case.inputs, **case.attrs, return_rois_num=True)
    np.testing.assert_array_equal(rois_num, case.rois_num)


def test_static_shapes_unknown_at_build_time():
    """Dynamic N, Np and C in a static program; results as with known shapes."""
    case = Golden(GOLDEN_FILES[5])
    paddle.enable_static()
    try:
        shapes = {"loc": [-1, -1, 4], "scores": [-1, -1, -1], "prior_box": [-1, 4],
                  "prior_box_var": [-1, 4]}
        main, _, results = static_program(shapes, [dict(case.attrs, return_index=True)])
        values = paddle.static.Executor(paddle.CPUPlace()).run(
            main, feed=case.inputs, fetch_list=results[0], return_numpy=False)
    finally:
        paddle.disable_static()
    assert_rows(np.array(values[0]), case.out_ri, "out")
    np.testing.assert_array_equal(np.array(values[1]), case.index)


# ---------------------------------------------------------------------------------------------
# A NumPy reference of the algorithm (decode, softmax, per-class greedy NMS with adaptive eta,
# keep_top_k), to check the options that fluid's layer could not express.

def reference(inputs, background_label, nms_threshold, nms_top_k, keep_top_k, score_threshold,
              nms_eta):
    """Rows (label, score, box) of every image in fluid's order, their indices, rows per image."""
    loc, logits, prior, var = (inputs[k].astype(np.float32) for k in INPUTS)
    pw, ph = prior[:, 2] - prior[:, 0], prior[:, 3] - prior[:, 1]
    cx = var[:, 0] * loc[..., 0] * pw + (prior[:, 0] + pw / 2)
    cy = var[:, 1] * loc[..., 1] * ph + (prior[:, 1] + ph / 2)
    w, h = np.exp(var[:, 2] * loc[..., 2]) * pw, np.exp(var[:, 3] * loc[..., 3]) * ph
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True)
    rows, index, rois_num = [], [], []
    n_images, n_priors, n_classes = logits.shape
    for n in range(n_images):
        kept = []  # (score, class, prior)
        for c in range(n_classes):
            if c != background_label:
                kept += [(probs[n, i, c], c, i)
                         for i in _nms(boxes[n], probs[n, :, c], score_threshold, nms_top_k,
                                       nms_threshold, nms_eta)]
        if keep_top_k > -1 and len(kept) > keep_top_k:
            kept = sorted(kept, key=lambda k: -k[0])[:keep_top_k]
        # Classes ascending; within a class the NMS order (score descending) is kept.
        kept = sorted(kept, key=lambda k: k[1])
        rows += [[c, s, *boxes[n, i]] for s, c, i in kept]
        index += [n * n_priors + i for _, _, i in kept]
        rois_num.append(len(kept))
    return (np.asarray(rows, np.float32).reshape(-1, 6), np.asarray(index).reshape(-1, 1),
            np.asarray(rois_num))


def _nms(boxes, scores, score_threshold, top_k, threshold, eta):
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] > score_threshold]
    if top_k > -1:
        order = order[:top_k]
    selected = []
    for i in order:
        if all(_iou(boxes[i], boxes[j]) <= threshold for j in selected):
            selected.append(i)
            if eta < 1 and threshold > 0.5:
                threshold *= eta
    return selected


def _iou(a, b):
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return 0.0
    inter = (min(a[2], b[2]) - max(a[0], b[0])) * (min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def _fluid_attrs(attrs):
    return dict(attrs, background_label=0, nms_eta=1.0)


@golden_params
def test_reference_matches_golden(path):
    """The reference reproduces fluid (background 0, no eta), so it can judge the options."""
    case = Golden(path)
    rows, index, rois_num = reference(case.inputs, **_fluid_attrs(case.attrs))
    assert_rows(rows, case.out_ri, "reference")
    np.testing.assert_array_equal(index, case.index)
    np.testing.assert_array_equal(rois_num, case.rois_num)


# Golden inputs on which forwarding background_label / nms_eta changes the result.
FORWARDED_CASES = [p for p in GOLDEN_FILES
                   if (lambda a: a["background_label"] != 0 or a["nms_eta"] != 1.0)(
                       json.loads(str(np.load(p)["attrs"])))]


@pytest.mark.parametrize("path", FORWARDED_CASES, ids=[p.stem for p in FORWARDED_CASES])
def test_nms_attrs_forwarded(path):
    case = Golden(path)
    expected = reference(case.inputs, **case.attrs)
    (out, index, rois_num), _ = run_dygraph(case.inputs, **case.attrs, return_index=True,
                                            return_rois_num=True, nms_attrs="forwarded")
    assert_rows(out, expected[0], "out")
    np.testing.assert_array_equal(index, expected[1])
    np.testing.assert_array_equal(rois_num, expected[2])


def test_nms_attrs_forwarded_changes_results():
    """The background class is dropped (and class 0 kept) only with nms_attrs='forwarded'."""
    case = Golden(GOLDEN_FILES[0])  # background_label 2 of 3 classes
    assert case.attrs["background_label"] == 2
    fluid = run_dygraph(case.inputs, **case.attrs)[0][0]
    forwarded = run_dygraph(case.inputs, **case.attrs, nms_attrs="forwarded")[0][0]
    assert 0 not in fluid[:, 0] and 2 in fluid[:, 0]
    assert 2 not in forwarded[:, 0] and 0 in forwarded[:, 0]


@pytest.mark.parametrize("mode", sorted(RUNNERS))
def test_nms_attrs_forwarded_modes(mode):
    """The option in every mode, with and without rois_num (two paths in legacy programs)."""
    case = Golden(FORWARDED_CASES[0])
    expected = reference(case.inputs, **case.attrs)
    for return_rois_num in (True, False):
        arrays, _ = RUNNERS[mode](case.inputs, **case.attrs, return_index=True,
                                  return_rois_num=return_rois_num, nms_attrs="forwarded")
        assert_rows(arrays[0], expected[0], "out")
        np.testing.assert_array_equal(arrays[1], expected[1])


ALL_EMPTY = [p for p in GOLDEN_FILES if bool(np.load(p)["all_empty"])]


@pytest.mark.parametrize("mode", sorted(RUNNERS))
def test_empty_result_option(mode):
    """empty_result='empty': an empty batch gives [0, 6] rows (and the LoD of zeros), with and
    without rois_num (two paths in legacy programs)."""
    case = Golden(ALL_EMPTY[0])
    n = case.inputs["loc"].shape[0]
    assert n > 1
    for return_rois_num in (True, False):
        arrays, lod = RUNNERS[mode](case.inputs, **case.attrs, return_rois_num=return_rois_num,
                                    empty_result="empty")
        assert arrays[0].shape == (0, 6)
        if return_rois_num:
            np.testing.assert_array_equal(arrays[1], np.zeros(n))
        if lod is not None:
            assert lod == [[0] * (n + 1)]
    # With detections the option changes nothing.
    case = Golden(GOLDEN_FILES[5])
    assert_rows(RUNNERS[mode](case.inputs, **case.attrs, empty_result="empty")[0][0], case.out,
                "out")


@pytest.mark.parametrize("mode", sorted(RUNNERS))
def test_variance_forms(mode):
    """prior_box_var as 4 numbers or None (unit variances) equals the [Np, 4] tensor form."""
    case = Golden(GOLDEN_FILES[5])
    inputs = dict(case.inputs)
    for form, rows in (([0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2]), (None, [1.0] * 4)):
        inputs["prior_box_var"] = np.tile(np.float32(rows), (len(inputs["prior_box"]), 1))
        expected = run_dygraph(inputs, **case.attrs, return_index=True)[0]
        got = _run_with_variance(mode, inputs, form, case.attrs)
        assert_rows(got[0], expected[0], f"out with prior_box_var={form}")
        np.testing.assert_array_equal(got[1], expected[1])


def _run_with_variance(mode, inputs, variance, attrs):
    names = ("loc", "scores", "prior_box")
    if mode == "dygraph":
        tensors = [paddle.to_tensor(inputs[k]) for k in names]
        return [r.numpy() for r in detection_output(*tensors, variance, **attrs,
                                                    return_index=True)]
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            feeds = [paddle.static.data(k, list(inputs[k].shape), "float32") for k in names]
            results = detection_output(*feeds, variance, **attrs, return_index=True)
        values = paddle.static.Executor(paddle.CPUPlace()).run(
            main, feed={k: inputs[k] for k in names}, fetch_list=list(results),
            return_numpy=False)
    finally:
        paddle.disable_static()
    return [np.array(v) for v in values]


def _detect(loc, scores, prior_box, prior_box_var, attrs):
    return detection_output(loc, scores, prior_box, prior_box_var, **attrs, return_rois_num=True)


def test_to_static():
    """Under paddle.jit.to_static (a PIR or legacy program), with detections and empty."""
    detect = paddle.jit.to_static(_detect, full_graph=True)
    for case in (Golden(GOLDEN_FILES[5]), Golden(ALL_EMPTY[0])):
        out, rois_num = detect(*[paddle.to_tensor(case.inputs[k]) for k in INPUTS], case.attrs)
        assert_rows(out.numpy(), case.out, "out")
        np.testing.assert_array_equal(rois_num.numpy(), case.rois_num)


@pytest.mark.parametrize("mode", sorted(RUNNERS))
def test_float64(mode):
    for case in (Golden(GOLDEN_FILES[5]), Golden(ALL_EMPTY[0])):
        inputs = {k: v.astype(np.float64) for k, v in case.inputs.items()}
        (out, rois_num), _ = RUNNERS[mode](inputs, **case.attrs, return_rois_num=True)
        assert out.dtype == np.float64
        assert_rows(out, case.out, "out")
        np.testing.assert_array_equal(rois_num, case.rois_num)


# ---------------------------------------------------------------------------------------------
# errors

def _args(n=2, n_priors=5, n_classes=3, **override):
    args = {"loc": paddle.zeros([n, n_priors, 4]), "scores": paddle.zeros([n, n_priors, n_classes]),
            "prior_box": paddle.zeros([n_priors, 4]), "prior_box_var": paddle.ones([n_priors, 4])}
    args.update(override)
    return args


ERRORS = [
    # (arguments changed, exception, words of the message)
    ({"loc": np.zeros([2, 5, 4], np.float32)}, TypeError, "loc: expected a paddle Tensor"),
    ({"loc": paddle.zeros([2, 5, 3])}, ValueError, "loc: expected shape [N, Np, 4]"),
    ({"loc": paddle.zeros([10, 4])}, ValueError, "loc: expected shape [N, Np, 4]"),
    ({"loc": paddle.zeros([2, 5, 4], "int32")}, TypeError, "loc: expected dtype float32"),
    ({"scores": paddle.zeros([3, 5, 3])}, ValueError, "scores: expected shape [N, Np, C]"),
    ({"scores": paddle.zeros([2, 6, 3])}, ValueError, "scores: expected shape [N, Np, C]"),
    ({"scores": paddle.zeros([2, 15])}, ValueError, "scores: expected shape [N, Np, C]"),
    ({"scores": paddle.zeros([2, 5, 3], "float64")}, TypeError, "scores: expected the dtype"),
    ({"scores": paddle.zeros([2, 5, 0])}, ValueError, "scores: expected at least one class"),
    ({"loc": paddle.zeros([0, 5, 4]), "scores": paddle.zeros([0, 5, 3])}, ValueError,
     "loc: expected at least one image"),
    ({"prior_box": paddle.zeros([6, 4])}, ValueError, "prior_box: expected shape [Np, 4]"),
    ({"prior_box": paddle.zeros([5, 4, 1])}, ValueError, "prior_box: expected shape [Np, 4]"),
    ({"prior_box": paddle.zeros([5, 4], "float64")}, TypeError, "prior_box: expected the dtype"),
    ({"prior_box_var": paddle.ones([4, 4])}, ValueError, "prior_box_var: expected shape"),
    ({"prior_box_var": paddle.ones([5, 4], "float64")}, TypeError, "prior_box_var: expected"),
    ({"prior_box_var": [0.1, 0.2]}, TypeError, "prior_box_var: expected a [Np, 4] tensor"),
    ({"prior_box_var": "0.1"}, TypeError, "prior_box_var: expected a [Np, 4] tensor"),
    ({"prior_box_var": [0.1, 0.1, float("nan"), 0.2]}, ValueError, "prior_box_var: expected"),
    ({"nms_threshold": 1.5}, ValueError, "nms_threshold: expected a number in [0, 1], "
                                         "received 1.5"),
    ({"nms_threshold": -0.1}, ValueError, "nms_threshold: expected a number in [0, 1], "
                                          "received -0.1"),
    ({"nms_threshold": float("nan")}, ValueError, "nms_threshold: expected a finite"),
    ({"nms_threshold": "0.3"}, TypeError, "nms_threshold: expected a number"),
    ({"score_threshold": 1e39}, ValueError, "score_threshold: expected a finite float32"),
    ({"score_threshold": 10**400}, ValueError, "score_threshold: expected a finite float32"),
    ({"score_threshold": -0.5}, ValueError, "score_threshold: expected a number in [0, 1]"),
    ({"score_threshold": None}, TypeError, "score_threshold: expected a number"),
    ({"nms_eta": 0.0}, ValueError, "nms_eta: expected a number in (0, 1], received 0.0"),
    ({"nms_eta": 1e-50}, ValueError, "nms_eta: expected a number in (0, 1]"),  # 0 as float32
    ({"nms_eta": 1.5}, ValueError, "nms_eta: expected a number in (0, 1]"),
    ({"nms_eta": float("inf")}, ValueError, "nms_eta: expected a finite"),
    ({"nms_top_k": 0}, ValueError, "nms_top_k: expected -1 (all) or an int > 0, received 0"),
    ({"nms_top_k": -2}, ValueError, "nms_top_k: expected -1 (all) or an int > 0"),
    ({"nms_top_k": 10.0}, TypeError, "nms_top_k: expected an int"),
    ({"nms_top_k": 2**31}, ValueError, "nms_top_k: expected an int in [-2147483648, 2147483647]"),
    ({"keep_top_k": 0}, ValueError, "keep_top_k: expected -1 (all) or an int > 0"),
    ({"keep_top_k": True}, TypeError, "keep_top_k: expected an int"),
    ({"background_label": 0.0}, TypeError, "background_label: expected an int"),
    ({"background_label": "0"}, TypeError, "background_label: expected an int"),
    ({"return_index": 2}, TypeError, "return_index: expected a bool, received int 2"),
    ({"return_index": "yes"}, TypeError, "return_index: expected a bool"),
    ({"return_rois_num": None}, TypeError, "return_rois_num: expected a bool"),
    ({"nms_attrs": "all"}, ValueError, "nms_attrs: expected one of"),
    ({"empty_result": None}, ValueError, "empty_result: expected one of"),
]


@pytest.mark.parametrize("override, error, words", ERRORS,
                         ids=[f"{i}-{'-'.join(e[0])}" for i, e in enumerate(ERRORS)])
def test_errors(override, error, words):
    with pytest.raises(error) as info:
        detection_output(**_args(**override))
    assert words in str(info.value)


def test_errors_static():
    """Checked while the program is built; dimensions unknown then (-1) are not judged."""
    paddle.enable_static()
    try:
        with paddle.static.program_guard(paddle.static.Program(), paddle.static.Program()):
            loc = paddle.static.data("loc", [-1, 5, 4], "float32")
            scores = paddle.static.data("scores", [-1, 6, 3], "float32")
            priors = paddle.static.data("priors", [-1, 4], "float32")
            with pytest.raises(ValueError, match=r"scores: expected shape \[N, Np, C\]"):
                detection_output(loc, scores, priors, priors)
            with pytest.raises(TypeError, match="prior_box_var: expected the dtype"):
                detection_output(loc, paddle.static.data("s", [-1, 5, 3], "float32"), priors,
                                 paddle.static.data("v", [5, 4], "float64"))
    finally:
        paddle.disable_static()


FEED_OTHER_DTYPE = r"""
import zlib  # noqa: F401  -- before paddle (Paddle 2.6.2 exports a zlib of its own)
import numpy as np
import paddle
import paddle_ssd_op

paddle.enable_static()
main, startup = paddle.static.Program(), paddle.static.Program()
shapes = {"loc": [-1, -1, 4], "scores": [-1, -1, -1], "prior_box": [-1, 4],
          "prior_box_var": [-1, 4]}
with paddle.static.program_guard(main, startup):
    out = paddle_ssd_op.detection_output(*[paddle.static.data(k, v, "float32")
                                           for k, v in shapes.items()])
inputs = {"loc": np.zeros([2, 5, 4], "float32"), "scores": np.zeros([2, 5, 3], "float32"),
          "prior_box": np.tile(np.array([.1, .1, .5, .5], "float32"), [5, 1]),
          "prior_box_var": np.ones([5, 4], "float32")}
exe = paddle.static.Executor(paddle.CPUPlace())
exe.run(main, feed=inputs, fetch_list=[out], return_numpy=False)
for name in inputs:
    for dtype in ("float64", "int32"):
        try:
            exe.run(main, feed=dict(inputs, **{name: inputs[name].astype(dtype)}),
                    fetch_list=[out], return_numpy=False)
        except Exception:
            print("raised", name, dtype)
"""


def test_static_feed_of_another_dtype_raises(tmp_path):
    """An array of another dtype fed to a program (which a PIR executor does not check) is an
    exception, not an abort of the process (box_coder's kernel met it in an OpenMP region)."""
    done = subprocess.run([sys.executable, "-c", FEED_OTHER_DTYPE], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:-1] == [
        f"raised {name} {dtype}" for name in INPUTS for dtype in ("float64", "int32")]


@pytest.mark.parametrize("values", [dict(nms_threshold=0, score_threshold=1, nms_eta=1e-6),
                                    dict(nms_threshold=1.0, score_threshold=0.0, nms_top_k=-1,
                                         keep_top_k=-1, background_label=-1),
                                    dict(background_label=2**31 - 1, nms_top_k=2**31 - 1),
                                    dict(return_index=1, return_rois_num=0)])
def test_limits_accepted(values):
    """The ends of every range, and values fluid accepted, run (ints and numpy scalars too)."""
    args = _args()
    args["scores"] = paddle.to_tensor(np.random.default_rng(0).normal(size=(2, 5, 3)),
                                      dtype="float32")
    returned = 1 + values.get("return_index", 0)
    for given in (values, {k: np.float32(v) if isinstance(v, float) else np.int64(v)
                           for k, v in values.items()}):
        results = detection_output(**args, **given)
        if returned > 1:
            assert isinstance(results, tuple) and len(results) == returned
        else:
            assert isinstance(results, paddle.Tensor)


# ---------------------------------------------------------------------------------------------
# Paddle Inference

PREDICTOR = r"""
import os, sys
import zlib  # noqa: F401  -- before paddle (Paddle 2.6.2 exports a zlib of its own)
import numpy as np
import paddle.inference as inference

prefix, feeds, result = sys.argv[1:4]
model = prefix + (".json" if os.path.exists(prefix + ".json") else ".pdmodel")
params = prefix + ".pdiparams"
config = inference.Config(model, params if os.path.exists(params) else "")
config.disable_gpu()
predictor = inference.create_predictor(config)
outputs = {}
for i, feed in enumerate(np.load(feeds, allow_pickle=True)["feeds"]):
    for name in predictor.get_input_names():
        predictor.get_input_handle(name).copy_from_cpu(feed[name])
    predictor.run()
    for j, name in enumerate(predictor.get_output_names()):
        outputs[f"{i}_{j}"] = predictor.get_output_handle(name).copy_to_cpu()
assert "paddle_ssd_op" not in sys.modules
np.savez(result, **outputs)
"""


def test_inference_model_without_the_package(tmp_path):
    """A saved model of detection_output alone (dynamic shapes; out and rois_num of one call,
    out and index of a return_index call) runs in Paddle Inference in a process that never
    imports paddle_ssd_op, on a batch with detections and on an empty one ([[-1]])."""
    cases = [Golden(GOLDEN_FILES[5]), Golden(ALL_EMPTY[0])]
    shapes = {"loc": [-1, -1, 4], "scores": [-1, -1, -1], "prior_box": [-1, 4],
              "prior_box_var": [-1, 4]}
    calls = [dict(cases[0].attrs, return_rois_num=True), dict(cases[0].attrs, return_index=True)]
    prefix = str(tmp_path / "detection_output")
    paddle.enable_static()
    try:
        main, feeds, results = static_program(shapes, calls)
        fetch = results[0] + results[1]  # out, rois_num, out, index
        exe = paddle.static.Executor(paddle.CPUPlace())
        in_process = [[np.array(v) for v in exe.run(main, feed=c.inputs, fetch_list=fetch,
                                                    return_numpy=False)] for c in cases]
        paddle.static.save_inference_model(prefix, feeds, fetch, exe, program=main)
    finally:
        paddle.disable_static()
    assert_rows(in_process[0][0], cases[0].out, "out")
    np.testing.assert_array_equal(in_process[1][0], [[-1.0]])  # the empty batch

    np.savez(tmp_path / "feeds.npz", feeds=np.array([c.inputs for c in cases], dtype=object))
    done = subprocess.run([sys.executable, "-c", PREDICTOR, prefix, str(tmp_path / "feeds.npz"),
                           str(tmp_path / "result.npz")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    predicted = np.load(tmp_path / "result.npz")
    for i, expected in enumerate(in_process):
        for j, what in enumerate(("out", "rois_num", "out (return_index)", "index")):
            got = predicted[f"{i}_{j}"]
            if what.startswith("out"):  # Paddle Inference's softmax may differ by an ulp
                assert_rows(got, expected[j], f"batch {i}: {what}")
            else:
                np.testing.assert_array_equal(got, expected[j], err_msg=f"batch {i}: {what}")
