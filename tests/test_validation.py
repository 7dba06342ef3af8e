"""Bad input raises a Python exception that names the argument, what was expected and what was
received: never a crash, never a silent wrong answer. Each row of BAD_INPUTS is a row of the table
in docs/errors.md."""
from pathlib import Path

import numpy as np
import paddle
import pytest

import paddle_ssd_op

N, NP, C = 2, 6, 4


def good_inputs():
    rng = np.random.default_rng(0)
    prior = np.array([[0, 0, .5, .5], [.5, 0, 1, .5], [0, .5, .5, 1], [.5, .5, 1, 1],
                      [.25, .25, .75, .75], [0, 0, 1, 1]], np.float32)
    return dict(
        location=rng.standard_normal((N, NP, 4)).astype(np.float32),
        confidence=rng.standard_normal((N, NP, C)).astype(np.float32),
        gt_box=np.array([[0, 0, .5, .5], [.5, .5, 1, 1], [.2, .2, .8, .8]], np.float32),
        gt_label=np.array([[1], [2], [3]], np.int32),
        prior_box=prior,
        prior_box_var=np.full((NP, 4), 0.1, np.float32),
    )


TENSOR_ARGS = ("location", "confidence", "gt_box", "gt_label", "prior_box", "prior_box_var")


def call(overrides=None, gt_lengths=(1, 2), **attrs):
    """ssd_loss in dygraph on good inputs with some replaced (numpy arrays become tensors)."""
    args = good_inputs()
    args.update(overrides or {})
    def tensor(k, v):
        if isinstance(v, np.ndarray) and k in TENSOR_ARGS:
            return paddle.to_tensor(v)
        if isinstance(v, list) and k in ("gt_box", "gt_label"):  # per-image lists
            return [paddle.to_tensor(x) for x in v]
        return v

    tensors = {k: tensor(k, v) for k, v in args.items()}
    return paddle_ssd_op.ssd_loss(**tensors, gt_lengths=gt_lengths, **attrs)


def per_image(boxes, labels):
    """Overrides giving gt_box / gt_label as lists of per-image arrays (with gt_lengths=None)."""
    return dict(overrides={"gt_box": [f32((n, c)) for n, c in boxes],
                           "gt_label": [np.ones(shape, np.int32) for shape in labels]},
                gt_lengths=None)


def f32(shape):
    return np.zeros(shape, np.float32)


# (id, call kwargs, exception type, words the message must contain)
BAD_INPUTS = [
    # shapes and ranks
    ("location_rank", dict(overrides={"location": f32((N, NP))}), ValueError,
     ["location", "[N, Np, 4]", "[2, 6]"]),
    ("location_columns", dict(overrides={"location": f32((N, NP, 5))}), ValueError,
     ["location", "[N, Np, 4]", "[2, 6, 5]"]),
    ("confidence_n", dict(overrides={"confidence": f32((3, NP, C))}), ValueError,
     ["confidence", "[3, 6, 4]"]),
    ("confidence_np", dict(overrides={"confidence": f32((N, 5, C))}), ValueError,
     ["confidence", "[2, 5, 4]"]),
    ("zero_classes", dict(overrides={"confidence": f32((N, NP, 0))}), ValueError,
     ["confidence", "C > 0"]),
    ("zero_priors", dict(overrides={"location": f32((N, 0, 4)), "confidence": f32((N, 0, C)),
                                    "prior_box": f32((0, 4)), "prior_box_var": f32((0, 4))}),
     ValueError, ["location", "Np > 0"]),
    ("gt_box_columns", dict(overrides={"gt_box": f32((3, 5))}), ValueError,
     ["gt_box", "[Ng, 4]", "[3, 5]"]),
    ("gt_label_rows", dict(overrides={"gt_label": np.array([[1], [2]], np.int32)}), ValueError,
     ["gt_label", "one label per gt_box row", "3"]),
    ("gt_label_rank", dict(overrides={"gt_label": np.ones((3, 2), np.int32)}), ValueError,
     ["gt_label", "[Ng, 1]", "[3, 2]"]),
    ("prior_box_rows", dict(overrides={"prior_box": f32((5, 4))}), ValueError,
     ["prior_box", "[Np, 4]", "[5, 4]"]),
    ("prior_box_var_shape", dict(overrides={"prior_box_var": f32((NP, 3))}), ValueError,
     ["prior_box_var", "[Np, 4]", "[6, 3]"]),
    ("prior_box_var_list", dict(overrides={"prior_box_var": [0.1, 0.2]}), ValueError,
     ["prior_box_var", "4 numbers"]),
    # dtypes
    ("location_int", dict(overrides={"location": np.zeros((N, NP, 4), np.int32)}), TypeError,
     ["location", "float32, float64, float16 or bfloat16", "int32"]),
    ("mixed_float", dict(overrides={"confidence": np.zeros((N, NP, C), np.float64)}), TypeError,
     ["confidence", "float32", "float64"]),
    ("gt_label_bool", dict(overrides={"gt_label": np.ones((3, 1), bool)}), TypeError,
     ["gt_label", "int32, int64, float32 or float64", "bool"]),
    ("variance_dtype", dict(overrides={"prior_box_var": np.ones((NP, 4), np.float64)}), TypeError,
     ["prior_box_var", "float32", "float64"]),
    ("numpy_location", dict(overrides={"location": np.zeros((N, NP, 4), np.float32).tolist()}),
     TypeError, ["location", "paddle Tensor", "list"]),
    # ground truth per image
    ("lengths_count", dict(gt_lengths=[3]), ValueError, ["gt_lengths", "N = 2", "1 values"]),
    ("lengths_negative", dict(gt_lengths=[4, -1]), ValueError, ["gt_lengths", ">= 0", "-1"]),
    ("lengths_sum", dict(gt_lengths=[1, 1]), ValueError, ["gt_lengths", "3", "sum 2"]),
    ("lengths_type", dict(gt_lengths="1,2"), TypeError, ["gt_lengths", "str"]),
    ("lengths_float", dict(gt_lengths=[1.0, 2.0]), TypeError, ["gt_lengths", "int", "float"]),
    ("no_layout", dict(gt_lengths=None), ValueError, ["gt_box", "gt_lengths", "2 images"]),
    # per-image lists: checked image by image, not by totals
    ("lists_counts_swapped", per_image([(2, 4), (1, 4)], [(1, 1), (2, 1)]), ValueError,
     ["gt_label[0]", "[2, 1]", "[1, 1]"]),
    ("lists_box_columns", per_image([(2, 4), (1, 5)], [(2, 1), (1, 1)]), ValueError,
     ["gt_box[1]", "[n_1, 4]", "[1, 5]"]),
    ("lists_box_rank", dict(overrides={
        "gt_box": [f32((2, 4)), f32((4,))],
        "gt_label": [np.ones((2, 1), np.int32), np.ones((1, 1), np.int32)]}, gt_lengths=None),
     ValueError, ["gt_box[1]", "[n_1, 4]", "[4]"]),
    ("lists_label_dtypes", dict(overrides={
        "gt_box": [f32((2, 4)), f32((1, 4))],
        "gt_label": [np.ones((2, 1), np.int32), np.ones((1, 1), np.int64)]}, gt_lengths=None),
     TypeError, ["gt_label[1]", "int32", "int64"]),
    ("lists_length_mismatch", per_image([(2, 4), (1, 4)], [(2, 1)]), ValueError,
     ["gt_label", "one tensor per image", "1"]),
    ("empty_batch", dict(overrides={
        "location": f32((0, NP, 4)), "confidence": f32((0, NP, C)), "gt_box": f32((0, 4)),
        "gt_label": np.zeros((0, 1), np.int32)}, gt_lengths=[]),
     ValueError, ["location", "N > 0", "[0, 6, 4]"]),
    ("empty_lists", dict(overrides={"gt_box": [], "gt_label": []}, gt_lengths=None),
     ValueError, ["gt_box", "one tensor per image", "empty list"]),
    # labels (checked by the kernel, where the data is)
    ("label_too_big", dict(overrides={"gt_label": np.array([[1], [4], [2]], np.int32)}),
     ValueError, ["gt_label", "[0, 4)", "4"]),
    ("label_negative", dict(overrides={"gt_label": np.array([[1], [-1], [2]], np.int64)}),
     ValueError, ["gt_label", "[0, 4)", "-1"]),
    ("label_nan", dict(overrides={"gt_label": np.array([[1], [np.nan], [2]], np.float32)}),
     ValueError, ["gt_label", "[0, 4)", "nan"]),
    # attributes
    ("background_range", dict(background_label=4), ValueError, ["background_label", "[0, 4)", "4"]),
    ("background_type", dict(background_label=0.5), TypeError, ["background_label", "int", "0.5"]),
    ("background_none", dict(background_label=None), TypeError, ["background_label", "None"]),
    ("match_type", dict(match_type="greedy"), ValueError, ["match_type", "bipartite", "'greedy'"]),
    ("mining_type", dict(mining_type="focal"), ValueError, ["mining_type", "max_negative", "focal"]),
    ("hard_example_no_sample_size", dict(mining_type="hard_example"), ValueError,
     ["sample_size", "> 0", "hard_example", "not given"]),
    ("hard_example_with_min_negatives", dict(mining_type="hard_example", sample_size=4,
                                             min_negatives_per_image=2), ValueError,
     ["min_negatives_per_image", "max_negative"]),
    ("normalization", dict(normalization="mean"), ValueError, ["normalization", "valid", "'mean'"]),
    ("neg_overlap_mode", dict(neg_overlap_mode="tf"), ValueError,
     ["neg_overlap_mode", "caffe", "'tf'"]),
    ("min_negatives_negative", dict(min_negatives_per_image=-2), ValueError,
     ["min_negatives_per_image", ">= 0", "-2"]),
    ("ratio_zero", dict(neg_pos_ratio=0), ValueError, ["neg_pos_ratio", "> 0", "0"]),
    ("ratio_string", dict(neg_pos_ratio="3"), TypeError, ["neg_pos_ratio", "number", "'3'"]),
    ("ratio_nan", dict(neg_pos_ratio=float("nan")), ValueError, ["neg_pos_ratio", "finite", "nan"]),
    ("threshold_range", dict(overlap_threshold=1.5), ValueError,
     ["overlap_threshold", "[0, 1]", "1.5"]),
    ("neg_overlap_range", dict(neg_overlap=-0.1), ValueError, ["neg_overlap", "[0, 1]", "-0.1"]),
    ("weight_none", dict(loc_loss_weight=None), TypeError, ["loc_loss_weight", "number", "None"]),
    ("weight_inf", dict(conf_loss_weight=float("inf")), ValueError, ["conf_loss_weight", "finite"]),
    # floats are checked as the float32 attribute they become
    ("ratio_float32_overflow", dict(neg_pos_ratio=1e39), ValueError,
     ["neg_pos_ratio", "finite", "1e+39", "inf as float32"]),
    ("weight_float32_overflow", dict(loc_loss_weight=-1e39), ValueError,
     ["loc_loss_weight", "finite", "-1e+39", "-inf as float32"]),
    ("threshold_float32_overflow", dict(overlap_threshold=1e300), ValueError,
     ["overlap_threshold", "finite", "1e+300"]),
    ("ratio_float32_underflow", dict(neg_pos_ratio=1e-50), ValueError,
     ["neg_pos_ratio", "> 0", "received 0"]),
    ("match_type_none", dict(match_type=None), TypeError, ["match_type", "str", "None"]),
    ("normalize_string", dict(normalize="yes"), TypeError, ["normalize", "bool", "'yes'"]),
    ("normalize_two", dict(normalize=2), TypeError, ["normalize", "bool", "2"]),
    ("sample_size_negative", dict(sample_size=-1), ValueError, ["sample_size", ">= 0", "-1"]),
]


@pytest.mark.parametrize("kwargs, error, words", [row[1:] for row in BAD_INPUTS],
                         ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_raises(kwargs, error, words):
    with pytest.raises(error) as info:
        call(**kwargs)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_good_inputs_run():
    loss = call()
    assert loss.shape == [N, 1] and np.isfinite(loss.numpy()).all()


@pytest.mark.parametrize("value, expected", [(True, True), (np.bool_(False), False), (1, True)])
def test_bool_like_normalize_accepted(value, expected):
    a = call(normalize=value).numpy()
    b = call(normalize=expected).numpy()
    np.testing.assert_array_equal(a, b)


def test_numpy_attribute_types_accepted():
    a = call(background_label=np.int64(0), neg_pos_ratio=np.float32(3), overlap_threshold=0.5)
    b = call()
    np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---------------------------------------------------------------------------------------------
# static programs: the LoD is only known to the kernel

def run_static(gt_box_lod, gt_label_lod, n=N):
    inputs = good_inputs()
    main, startup = paddle.static.Program(), paddle.static.Program()
    paddle.enable_static()
    try:
        with paddle.static.program_guard(main, startup):
            loc = paddle.static.data("location", [n, NP, 4], "float32")
            conf = paddle.static.data("confidence", [n, NP, C], "float32")
            box = paddle.static.data("gt_box", [-1, 4], "float32", lod_level=1)
            label = paddle.static.data("gt_label", [-1, 1], "int32", lod_level=1)
            prior = paddle.static.data("prior_box", [NP, 4], "float32")
            loss = paddle_ssd_op.ssd_loss(loc, conf, box, label, prior)
        place = paddle.CPUPlace()
        feed = {"location": inputs["location"][:n], "confidence": inputs["confidence"][:n],
                "prior_box": inputs["prior_box"],
                "gt_box": paddle.base.create_lod_tensor(inputs["gt_box"], gt_box_lod, place),
                "gt_label": paddle.base.create_lod_tensor(inputs["gt_label"], gt_label_lod, place)}
        exe = paddle.static.Executor(place)
        exe.run(startup)
        return exe.run(main, feed=feed, fetch_list=[loss])[0]
    finally:
        paddle.disable_static()


def test_static_good_lod_runs():
    assert run_static([[1, 2]], [[1, 2]]).shape == (N, 1)


@pytest.mark.parametrize("box_lod, label_lod", [
    ([[3]], [[3]]),          # one segment for two images
    ([[1, 1, 1]], [[1, 1, 1]]),  # three segments for two images
    ([[1, 2]], [[2, 1]]),    # gt_box and gt_label disagree
])
def test_static_bad_lod_raises(box_lod, label_lod):
    with pytest.raises(ValueError, match="gt_box|gt_label"):
        run_static(box_lod, label_lod)


def test_every_bad_input_is_documented():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text()
    missing = [row[0] for row in BAD_INPUTS if f"`{row[0]}`" not in doc]
    assert not missing, f"rows of BAD_INPUTS missing from docs/errors.md: {missing}"
