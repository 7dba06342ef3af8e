"""The op's attribute table (include/ssd_loss/attributes.h, exposed as ``_core.ATTRIBUTES``): the
public signature agrees with it, and a bad attribute value gets the same exception and message from
the wrapper, from ``_core`` and from a program that holds the value (the op checks it when it
runs, as it does for a saved program loaded later)."""
import inspect

import numpy as np
import paddle
import pytest

import paddle_ssd_op
from paddle_ssd_op import _core, layers
from paddle_ssd_op._args import in_pir_mode

N, NP, C = 2, 6, 4


def inputs():
    rng = np.random.default_rng(0)
    return dict(
        location=rng.standard_normal((N, NP, 4)).astype(np.float32),
        confidence=rng.standard_normal((N, NP, C)).astype(np.float32),
        gt_box=np.array([[0, 0, .5, .5], [.5, .5, 1, 1], [.2, .2, .8, .8]], np.float32),
        gt_label=np.array([1, 2, 3], np.int64),
        prior_box=np.array([[0, 0, .5, .5], [.5, 0, 1, .5], [0, .5, .5, 1], [.5, .5, 1, 1],
                            [.25, .25, .75, .75], [0, 0, 1, 1]], np.float32),
        gt_lengths=np.array([1, 2], np.int64),
    )


def test_signature_defaults_are_the_tables():
    params = inspect.signature(paddle_ssd_op.ssd_loss).parameters
    # The API's aliases of "not given": sample_size None is 0; normalization None follows
    # normalize, whose default gives the table's 'valid'.
    api_default = {"sample_size": 0, "normalization": "valid"}
    for name, attr_type, default in _core.ATTRIBUTES:
        assert name in params, name
        given = params[name].default
        assert api_default.get(name, given) == default, (name, given, default)
        assert type(default).__name__ == {"int": "int", "float": "float",
                                          "std::string": "str"}[attr_type]
    assert params["normalize"].default is True
    assert layers._ATTR_NAMES == tuple(row[0] for row in _core.ATTRIBUTES)


def test_op_attributes_are_cast_in_the_ops_order():
    values = _core.op_attributes(background_label=np.int64(1), neg_pos_ratio=np.float32(2),
                                 normalize=False, sample_size=3)
    defaults = [default for _, _, default in _core.ATTRIBUTES]
    expected = list(defaults)
    expected[0], expected[2], expected[8], expected[9] = 1, 2.0, "none", 3
    assert list(values) == expected
    assert [type(v) for v in values] == [type(d) for d in defaults]


# Values the attribute types can hold (so that a program can hold them too) but the rules refuse.
BAD_VALUES = [
    dict(overlap_threshold=1.5),
    dict(neg_overlap=-0.25),
    dict(neg_pos_ratio=0.0),
    dict(neg_pos_ratio=float("nan")),
    dict(conf_loss_weight=float("inf")),
    dict(match_type="greedy"),
    dict(normalization="mean"),
    dict(neg_overlap_mode="tf"),
    dict(sample_size=-1),
    dict(min_negatives_per_image=-2),
    dict(mining_type="hard_example"),
    dict(mining_type="hard_example", sample_size=2, neg_overlap_mode="caffe"),
]


def core_error(bad):
    with pytest.raises(ValueError) as info:
        _core.op_attributes(**bad)
    return str(info.value)


def attribute_tuple(bad):
    """All attributes in the op's order: the table's defaults, with the bad values."""
    return tuple(bad.get(name, default) for name, _, default in _core.ATTRIBUTES)


def run_program(attrs):
    """Builds a static program whose op holds `attrs` as given (no wrapper check) and runs it."""
    x = inputs()
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            v = {k: paddle.static.data(k, list(a.shape), str(a.dtype)) for k, a in x.items()}
            ins = (v["location"], v["confidence"], v["gt_box"], v["gt_label"], v["prior_box"],
                   None, v["gt_lengths"])
            if in_pir_mode():
                outs = layers._run_custom_op(*ins, *attrs)
            else:
                outs = layers._append_legacy_op(ins, attrs, "float32", None)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        return exe.run(main, feed=x, fetch_list=[outs[0]])[0]
    finally:
        paddle.disable_static()


def call_wrapper(**attrs):
    x = {k: paddle.to_tensor(a) for k, a in inputs().items()}
    lengths = x.pop("gt_lengths")
    return paddle_ssd_op.ssd_loss(**x, gt_lengths=lengths, **attrs)


def test_program_runs_with_good_attributes():
    loss = run_program(attribute_tuple({}))
    np.testing.assert_array_equal(loss, call_wrapper().numpy())


@pytest.mark.parametrize("bad", BAD_VALUES, ids=lambda bad: "-".join(map(str, bad.values())))
def test_same_error_everywhere(bad):
    message = core_error(bad)
    assert message.startswith(layers._ATTR_NAMES), message  # names an attribute
    with pytest.raises(ValueError) as wrapper:
        call_wrapper(**bad)
    assert str(wrapper.value) == message
    with pytest.raises(ValueError) as program:
        run_program(attribute_tuple(bad))
    assert message in str(program.value)


def test_background_label_against_classes_everywhere():
    """background_label needs C, so the check is the data's; the same message still."""
    x = inputs()
    with pytest.raises(ValueError) as core:
        _core.forward(x["location"], x["confidence"], x["gt_box"], x["gt_label"],
                      x["gt_lengths"], x["prior_box"], np.ones(4, np.float32),
                      background_label=C)
    message = str(core.value)
    assert message.startswith("background_label") and f"[0, {C})" in message
    with pytest.raises(ValueError) as wrapper:
        call_wrapper(background_label=C)
    assert message in str(wrapper.value)
    with pytest.raises(ValueError) as program:
        run_program(attribute_tuple(dict(background_label=C)))
    assert message in str(program.value)


@pytest.mark.parametrize("bad, error", [
    (dict(overlap_threshold="0.5"), TypeError), (dict(background_label=True), TypeError),
    (dict(match_type=None), TypeError), (dict(normalize=2), TypeError),
    (dict(neg_pos_ratio=1e39), ValueError), (dict(sample_size=2**31), ValueError),
    (dict(sample_size=2**70), ValueError),
])
def test_casts_are_the_cores(bad, error):
    """Values no attribute can hold: the wrapper's message is _core's."""
    with pytest.raises(error) as core:
        _core.op_attributes(**bad)
    with pytest.raises(error) as wrapper:
        call_wrapper(**bad)
    assert str(wrapper.value) == str(core.value)
    assert str(core.value).startswith(tuple(bad))


def test_unknown_keyword_is_refused():
    with pytest.raises(TypeError, match="unexpected keyword argument 'overlap'"):
        _core.op_attributes(overlap=0.5)
