"""multi_box_head (static programs: PIR on Paddle 3.x, legacy IR on 2.6) and MultiBoxHead (dygraph)
against the real fluid 1.8.5 multi_box_head (tests/data/golden_detection/multi_box_head), plus
parameter order and initializers, dynamic shapes, gradients, argument errors, a saved inference
model run by Paddle Inference in a process that does not import paddle_ssd_op, and (slow, with
.oracle-venv) random settings against fluid 1.8.5 itself."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

import paddle_ssd_op  # noqa: F401  -- the installed package (the lead adds the exports)
from paddle_ssd_op import MultiBoxHead, multi_box_head

PIR = int(paddle.__version__.split(".")[0]) >= 3
CPU = paddle.CPUPlace()
GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden_detection" / "multi_box_head"
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.npz"))
RTOL, ATOL = 1e-5, 1e-6
OUTPUTS = ("mbox_locs", "mbox_confs", "boxes", "variances")
# Static programs are built for 12 cases at once (building and preparing programs is the slow
# part, ~2 s per 12 cases). By default one group, chosen to cover every rule (min_ratio/max_ratio,
# [] max entries, steps, step_h alone, kernel 3 with pad 1 and pad 0, min-max order, clip, offset
# 0, swapped variances, N 1-3, non-square images); all 60 with -m slow.
STATIC_QUICK = {"case_7_0000", "case_7_0002", "case_7_0006", "case_7_0007", "case_7_0011",
                "case_7_0012", "case_7_0016", "case_7_0021", "case_7_0027", "case_7_0036",
                "case_7_0048", "case_7_0059"}
# (another set of cases, e.g. held-back ones, gets every fifth case)
_QUICK = [p for p in GOLDEN_FILES if p.stem in STATIC_QUICK] or GOLDEN_FILES[::5]
_REST = [p for p in GOLDEN_FILES if p not in _QUICK]
STATIC_GROUPS = [pytest.param(_QUICK, id="quick")]
STATIC_GROUPS += [pytest.param(_REST[i:i + 12], id=f"{_REST[i].stem}-{_REST[i:i + 12][-1].stem}",
                               marks=pytest.mark.slow) for i in range(0, len(_REST), 12)]
# The arguments of fluid's multi_box_head that hold one entry per input.
PER_LAYER = ("min_sizes", "max_sizes", "aspect_ratios", "steps", "step_w", "step_h")


class Golden:
    """One case computed by fluid 1.8.5's multi_box_head."""

    def __init__(self, path):
        d = np.load(path)
        self.name = Path(path).stem
        self.attrs = json.loads(str(d["attrs"]))
        self.inputs = [d[f"x{i}"] for i in range(int(d["num_inputs"]))]
        self.dtype = str(self.inputs[0].dtype)
        self.image_shape = [int(v) for v in d["image_shape"]]
        self.params = [d[f"w{i:03d}"] for i in range(int(d["num_params"]))]
        self.param_names = json.loads(str(d["param_names"]))
        self.outputs = [d[k] for k in OUTPUTS]

    @property
    def in_channels(self):
        return [x.shape[1] for x in self.inputs]

    def assert_matches(self, outputs):
        for key, got, want in zip(OUTPUTS, outputs, self.outputs):
            assert got.shape == want.shape, (self.name, key, got.shape, want.shape)
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{self.name} {key}")


def golden_ids(files):
    return [p.stem for p in files]


def first_case(accept=lambda case: True):
    """The first golden case for which accept(case) holds."""
    return next(case for case in map(Golden, GOLDEN_FILES) if accept(case))


def plain_conv(case):
    """1x1 kernel, no padding, stride 1: one conv output per map cell."""
    return all(case.attrs.get(k, 1) == 1 for k in ("kernel_size", "stride")) and \
        case.attrs.get("pad", 0) == 0


# ---------------------------------------------------------------------------------------------
# static programs


def parameter_names(program):
    """The program's parameters in creation order.

    fluid names them conv2d_<k>.w_0 / .b_0 in creation order, so the order is read from the
    names (PIR lists its parameter ops newest first)."""
    if PIR:
        names = [op.attrs()["parameter_name"] for op in program.global_block().ops
                 if op.name() == "builtin.parameter"]
    else:
        names = [p.name for p in program.all_parameters()]
    for name in names:
        assert re.fullmatch(r"conv2d_\d+\.[wb]_0", name), names

    def creation_order(name):
        conv, kind = re.fullmatch(r"conv2d_(\d+)\.([wb])_0", name).groups()
        return int(conv), kind == "b"
    return sorted(names, key=creation_order)


def build_static(cases, batch=None, image_hw=None):
    """One program computing every case's multi_box_head; returns (main, startup, feeds,
    fetches) with feeds [(data variable, array)] and fetches the 4 outputs of each case.
    ``batch=-1`` declares a dynamic batch, ``image_hw=-1`` an image of unknown height and width."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    feeds, fetches = [], []
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        for c, case in enumerate(cases):
            inputs = []
            for i, x in enumerate(case.inputs):
                shape = [x.shape[0] if batch is None else batch, *x.shape[1:]]
                inputs.append(paddle.static.data(f"c{c}_x{i}", shape, case.dtype))
                feeds.append((inputs[-1], x))
            n, channels, height, width = case.image_shape
            image_shape = [n if batch is None else batch, channels,
                           *([height, width] if image_hw is None else [image_hw] * 2)]
            image = paddle.static.data(f"c{c}_image", image_shape, case.dtype)
            feeds.append((image, np.zeros(case.image_shape, case.dtype)))
            fetches.extend(multi_box_head(inputs, image, **case.attrs))
    return main, startup, feeds, fetches


def run_static(cases, batch=None, image_hw=None, feeds_of=None):
    """Builds the cases' program, assigns the golden weights by creation order and runs it;
    returns the outputs of every case (4 per case). ``feeds_of(array)`` may change what is fed."""
    paddle.enable_static()
    try:
        main, startup, feeds, fetches = build_static(cases, batch, image_hw)
        names = parameter_names(main)
        weights = [w for case in cases for w in case.params]
        assert len(names) == len(weights)
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            exe = paddle.static.Executor(CPU)
            exe.run(startup)
            for name, w in zip(names, weights):
                tensor = scope.find_var(name).get_tensor()
                assert tuple(np.array(tensor).shape) == w.shape, (name, w.shape)
                tensor.set(w, CPU)
            feed = {var.name: (v if feeds_of is None else feeds_of(v)) for var, v in feeds}
            results = exe.run(main, feed=feed, fetch_list=fetches)
    finally:
        paddle.disable_static()
    return [results[4 * c:4 * c + 4] for c in range(len(cases))]


@pytest.mark.parametrize("paths", STATIC_GROUPS)
def test_golden_static(paths):
    cases = [Golden(p) for p in paths]
    for case, outputs in zip(cases, run_static(cases)):
        case.assert_matches(outputs)


def test_static_parameter_names_and_shapes_are_fluids():
    case = first_case(lambda c: plain_conv(c) and len(c.inputs) > 1)
    paddle.enable_static()
    try:
        main, _, _, fetches = build_static([case], batch=-1)
        if PIR:
            shapes = {op.attrs()["parameter_name"]: op.result(0).shape
                      for op in main.global_block().ops if op.name() == "builtin.parameter"}
        else:
            shapes = {p.name: p.shape for p in main.all_parameters()}
        names = parameter_names(main)
        declared = [list(f.shape) for f in fetches]
    finally:
        paddle.disable_static()
    assert names == case.param_names
    assert [list(shapes[n]) for n in names] == [list(w.shape) for w in case.params]
    num_priors = case.outputs[2].shape[0]
    assert declared == [[-1, num_priors, 4], [-1, num_priors, case.attrs["num_classes"]],
                        [num_priors, 4], [num_priors, 4]]


def test_static_dynamic_batch_and_image_size():
    """Declared batch -1 (fed 2N images: the outputs are the case's twice) and an image whose
    height and width are only known at run time (prior_box reads them from the fed image)."""
    case = first_case(lambda c: len(c.inputs) > 2)

    def doubled(array):
        return np.concatenate([array, array])

    for image_hw in (None, -1):
        outputs = run_static([case], batch=-1, image_hw=image_hw, feeds_of=doubled)[0]
        locs, confs, boxes, variances = outputs
        np.testing.assert_allclose(locs, np.concatenate([case.outputs[0]] * 2), RTOL, ATOL)
        np.testing.assert_allclose(confs, np.concatenate([case.outputs[1]] * 2), RTOL, ATOL)
        np.testing.assert_allclose(boxes, case.outputs[2], RTOL, ATOL)
        np.testing.assert_allclose(variances, case.outputs[3], RTOL, ATOL)


# ---------------------------------------------------------------------------------------------
# dygraph


def golden_head(case):
    """The case's MultiBoxHead with the golden weights, assigned in parameters() order (which
    must be fluid's creation order: same shapes, same names)."""
    with paddle.utils.unique_name.guard():
        head = MultiBoxHead(case.in_channels, dtype=case.dtype, **case.attrs)
    params = head.parameters()
    assert [p.shape for p in params] == [list(w.shape) for w in case.params]
    assert [p.name for p in params] == case.param_names
    for param, w in zip(params, case.params):
        param.set_value(w)
    return head


def run_dygraph(case, head):
    image = paddle.zeros(case.image_shape, case.dtype)
    return [t.numpy() for t in head([paddle.to_tensor(x) for x in case.inputs], image)]


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=golden_ids(GOLDEN_FILES))
def test_golden_dygraph(path):
    case = Golden(path)
    case.assert_matches(run_dygraph(case, golden_head(case)))


def test_single_input_is_not_reshaped():
    """fluid returns one input's results as they are: locs [N, H*W*nb*4], boxes [H, W, nb, 4];
    they are the first layer's rows of a two-input head with the same settings."""
    case = first_case(lambda c: "min_sizes" in c.attrs and plain_conv(c))
    attrs = {k: (v[:1] if k in PER_LAYER else v) for k, v in case.attrs.items()}
    x = case.inputs[0]
    n, _, height, width = x.shape
    head = MultiBoxHead([x.shape[1]], **attrs)
    for param, w in zip(head.parameters(), case.params[:4]):
        param.set_value(w)
    locs, confs, boxes, variances = head([paddle.to_tensor(x)], paddle.zeros(case.image_shape))
    cells = height * width
    num_boxes = boxes.shape[2]
    assert boxes.shape == variances.shape == [height, width, num_boxes, 4]
    rows = cells * num_boxes
    np.testing.assert_allclose(boxes.numpy().reshape(-1, 4), case.outputs[2][:rows], RTOL, ATOL)
    np.testing.assert_allclose(variances.numpy().reshape(-1, 4), case.outputs[3][:rows])
    np.testing.assert_allclose(locs.numpy(), case.outputs[0][:, :rows].reshape(n, -1), RTOL, ATOL)
    np.testing.assert_allclose(confs.numpy(), case.outputs[1][:, :rows].reshape(n, -1), RTOL, ATOL)

    paddle.enable_static()
    try:
        with paddle.static.program_guard(paddle.static.Program(), paddle.static.Program()):
            static = multi_box_head([paddle.static.data("x", [-1, *x.shape[1:]], "float32")],
                                    paddle.static.data("image", case.image_shape, "float32"),
                                    **attrs)
            assert [list(t.shape) for t in static] == [
                [-1, rows * 4], [-1, rows * attrs["num_classes"]], [height, width, num_boxes, 4],
                [height, width, num_boxes, 4]]
    finally:
        paddle.disable_static()


def test_default_initializers_are_fluids():
    """Weights ~ Normal(0, sqrt(2 / (k * k * C_in))), biases 0, as fluid 1.8's conv2d."""
    paddle.seed(3)
    head = MultiBoxHead([64, 32], 300, 21, [[2.0], [2.0, 3.0]], min_sizes=[30, 60],
                        max_sizes=[60, 111], kernel_size=3, pad=1)
    for i, param in enumerate(head.parameters()):
        values = param.numpy()
        if i % 2:
            assert not values.any()
        else:
            std = (2.0 / (9 * param.shape[1])) ** 0.5
            assert abs(values.mean()) < 0.05 * std
            assert abs(values.std() / std - 1) < 0.05, (i, values.std(), std)


def test_gradients():
    """Backward through the head: with loss = sum(locs) + 2 sum(confs) and 1x1 kernels, every
    bias gets (N H W) times its factor and every input x_i the channel sums of its weights."""
    case = first_case(plain_conv)
    head = golden_head(case)
    inputs = [paddle.to_tensor(x, stop_gradient=False) for x in case.inputs]
    locs, confs, boxes, _ = head(inputs, paddle.zeros(case.image_shape))
    assert boxes.stop_gradient
    (paddle.sum(locs) + 2 * paddle.sum(confs)).backward()
    params = head.parameters()
    for i, x in enumerate(case.inputs):
        n, _, height, width = x.shape
        w_loc, b_loc, w_conf, b_conf = params[4 * i:4 * i + 4]
        np.testing.assert_allclose(b_loc.grad.numpy(), np.full(b_loc.shape, n * height * width))
        np.testing.assert_allclose(b_conf.grad.numpy(), np.full(b_conf.shape,
                                                                2 * n * height * width))
        np.testing.assert_allclose(w_loc.grad.numpy()[:, :, 0, 0],
                                   np.broadcast_to(x.sum((0, 2, 3)), w_loc.shape[:2]), rtol=1e-5)
        per_channel = w_loc.numpy().sum((0, 2, 3)) + 2 * w_conf.numpy().sum((0, 2, 3))
        np.testing.assert_allclose(inputs[i].grad.numpy(),
                                   np.broadcast_to(per_channel[None, :, None, None], x.shape),
                                   rtol=1e-5, atol=1e-5)


class TwoMapModel(paddle.nn.Layer):
    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, x0, x1, image):
        return self.head([x0, x1], image)


def test_to_static_matches_dygraph():
    """Inside paddle.jit.to_static (dynamic batch): the same outputs as in dygraph."""
    case = first_case(lambda c: len(c.inputs) == 2)
    model = TwoMapModel(golden_head(case))
    inputs = [paddle.to_tensor(x) for x in case.inputs] + [paddle.zeros(case.image_shape)]
    specs = [paddle.static.InputSpec([None, *x.shape[1:]]) for x in case.inputs]
    static = paddle.jit.to_static(model, full_graph=True,
                                  input_spec=specs + [paddle.static.InputSpec(case.image_shape)])
    outputs = static(*inputs)
    case.assert_matches([t.numpy() for t in outputs])


def test_float64():
    case = first_case()
    head = MultiBoxHead(case.in_channels, dtype="float64", **case.attrs)
    for param, w in zip(head.parameters(), case.params):
        param.set_value(w.astype(np.float64))
    out = head([paddle.to_tensor(x.astype(np.float64)) for x in case.inputs],
               paddle.zeros(case.image_shape))
    assert all(t.dtype == paddle.float64 for t in out)
    case.assert_matches([t.numpy() for t in out])


# ---------------------------------------------------------------------------------------------
# arguments

# 3 inputs of 4 channels (8x8, 4x4, 2x2) on a 300x300 image
OK = dict(in_channels=[4, 4, 4], base_size=300, num_classes=3,
          aspect_ratios=[[2.0], [2.0, 3.0], [2.0]], min_ratio=20, max_ratio=90)
EXPLICIT = dict(OK, min_sizes=[30.0, 60.0, 111.0], max_sizes=[60.0, 111.0, 162.0])

OPTION_ERRORS = [
    (dict(OK, in_channels=[]), ValueError, "in_channels"),
    (dict(OK, in_channels=4), TypeError, "in_channels"),
    (dict(OK, in_channels=[4, 0, 4]), ValueError, r"in_channels\[1\]"),
    (dict(OK, base_size=0), ValueError, "base_size"),
    (dict(OK, base_size="300"), TypeError, "base_size"),
    (dict(OK, num_classes=0), ValueError, "num_classes"),
    (dict(OK, num_classes=2.0), TypeError, "num_classes"),
    (dict(OK, aspect_ratios=[[2.0], [2.0]]), ValueError, "aspect_ratios"),
    (dict(OK, aspect_ratios=[[2.0], [0.0], [2.0]]), ValueError, r"aspect_ratios\[1\]"),
    (dict(OK, aspect_ratios=[[2.0], [2.0], [-2.0]]), ValueError, r"aspect_ratios\[2\]"),
    (dict(OK, aspect_ratios=[[float("nan")], [2.0], [2.0]]), ValueError, r"aspect_ratios\[0\]"),
    (dict(OK, aspect_ratios=[["2"], [2.0], [2.0]]), TypeError, r"aspect_ratios\[0\]"),
    (dict(OK, min_ratio=None), ValueError, "min_ratio"),
    (dict(OK, min_ratio=20.0), TypeError, "min_ratio"),
    (dict(OK, min_ratio=0), ValueError, "min_ratio"),
    (dict(OK, min_ratio=90, max_ratio=20), ValueError, "max_ratio"),
    (dict(OK, min_ratio=50, max_ratio=50), ValueError, "max_ratio"),
    (dict(OK, in_channels=[4, 4], aspect_ratios=[2.0, 2.0]), ValueError, "min_sizes"),
    (dict(EXPLICIT, max_sizes=None), ValueError, "max_sizes"),
    (dict(EXPLICIT, min_sizes=[30.0, 60.0]), ValueError, "min_sizes"),
    (dict(EXPLICIT, in_channels=[4, 4], aspect_ratios=[2.0, 2.0]), ValueError, "min_sizes"),
    (dict(EXPLICIT, min_sizes=30.0), TypeError, "min_sizes"),
    (dict(EXPLICIT, min_sizes=[30.0, -60.0, 111.0]), ValueError, r"min_sizes\[1\]"),
    (dict(EXPLICIT, min_sizes=[30.0, [], 111.0]), ValueError, r"min_sizes\[1\]"),
    (dict(EXPLICIT, min_sizes=[30.0, 60.0, 1e39]), ValueError, r"min_sizes\[2\]"),
    (dict(EXPLICIT, max_sizes=[60.0, 50.0, 162.0]), ValueError, r"max_sizes\[1\]"),
    (dict(EXPLICIT, max_sizes=[[60.0, 70.0], 111.0, 162.0]), ValueError, r"max_sizes\[0\]"),
    (dict(EXPLICIT, max_sizes=[float("nan"), 111.0, 162.0]), ValueError, r"max_sizes\[0\]"),
    (dict(EXPLICIT, max_sizes=[None, 111.0, 162.0]), TypeError, r"max_sizes\[0\]"),
    (dict(OK, steps=[8.0, 16.0]), ValueError, "steps"),
    (dict(OK, steps=[8.0, -16.0, 32.0]), ValueError, r"steps\[1\]"),
    (dict(OK, step_w=[8.0, 16.0, 32.0]), ValueError, "step_h"),
    (dict(OK, step_w=[8.0, 16.0, 32.0], step_h=[8.0, 16.0]), ValueError, "step_h"),
    (dict(OK, step_w=[8.0, 16.0, 32.0], step_h=[8.0, "a", 32.0]), TypeError, r"step_h\[1\]"),
    (dict(OK, offset=1.5), ValueError, "offset"),
    (dict(OK, offset=-0.25), ValueError, "offset"),
    (dict(OK, offset=None), TypeError, "offset"),
    (dict(OK, variance=[0.1, 0.1, 0.2]), ValueError, "variance"),
    (dict(OK, variance=[0.1, 0.1, 0.2, 0.0]), ValueError, "variance"),
    (dict(OK, variance=[0.1, 0.1, 0.2, 1e39]), ValueError, "variance"),
    (dict(OK, variance=0.1), TypeError, "variance"),
    (dict(OK, flip="yes"), TypeError, "flip"),
    (dict(OK, clip=2), TypeError, "clip"),
    (dict(OK, min_max_aspect_ratios_order=None), TypeError, "min_max_aspect_ratios_order"),
    (dict(OK, kernel_size=0), ValueError, "kernel_size"),
    (dict(OK, kernel_size=1.5), TypeError, "kernel_size"),
    (dict(OK, kernel_size=[3, 3, 3]), ValueError, "kernel_size"),
    (dict(OK, pad=-1), ValueError, "pad"),
    (dict(OK, pad="FULL"), ValueError, "pad"),
    (dict(OK, pad=[[1, 1], [0, 0], [1, 1], [1, 1]]), ValueError, "pad"),
    (dict(OK, stride=0), ValueError, "stride"),
    (dict(OK, name=3), TypeError, "name"),
    (dict(OK, dtype="int32"), TypeError, "dtype"),
    # beyond what Paddle takes: int32 filters, int64 weight sizes, float32 sizes
    (dict(OK, num_classes=2**31 - 1), ValueError, "num_classes"),
    (dict(OK, in_channels=[2**20, 4, 4], kernel_size=2**20), ValueError, "kernel_size"),
    (dict(OK, base_size=3e38), ValueError, "base_size"),
]


@pytest.mark.parametrize("kwargs,error,name", OPTION_ERRORS,
                         ids=[f"{i}-{e[2]}" for i, e in enumerate(OPTION_ERRORS)])
def test_option_errors(kwargs, error, name):
    kwargs = dict(kwargs)
    with pytest.raises(error, match=rf"^{name}: expected"):
        MultiBoxHead(kwargs.pop("in_channels"), **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(OK, in_channels=[4, 2**31, 4]),
     r"in_channels\[1\]: expected an int in \[1, 2147483647\], received 2147483648"),
    (dict(OK, max_ratio=2**40),
     r"max_ratio: expected an int in \[-2147483648, 2147483647\], received 1099511627776"),
    (dict(OK, base_size=3e38), r"base_size: expected base_size \* \(ratio \+ step\) / 100 \(the "
     r"max size of inputs\[2\]\) to be a finite float32, received base_size=3e\+38, "
     r"min_ratio=20, max_ratio=90"),
])
def test_option_error_messages(kwargs, message):
    """The messages say what was expected of the value received (an int beyond int32 is not
    called "not >= 1"; sizes computed from base_size name it)."""
    kwargs = dict(kwargs)
    with pytest.raises(ValueError, match=rf"^{message}$"):
        MultiBoxHead(kwargs.pop("in_channels"), **kwargs)


def feature_maps(n=2, channels=(4, 4, 4), sizes=(8, 4, 2), dtype="float32"):
    return [paddle.zeros([n, c, s, s], dtype) for c, s in zip(channels, sizes)]


IMAGE = [2, 3, 300, 300]
INPUT_ERRORS = [
    (lambda: (feature_maps()[0], paddle.zeros(IMAGE)), {}, TypeError, "inputs"),
    (lambda: ([], paddle.zeros(IMAGE)), {}, ValueError, "inputs"),
    (lambda: ([np.zeros([2, 4, 8, 8])] + feature_maps()[1:], paddle.zeros(IMAGE)), {},
     TypeError, r"inputs\[0\]"),
    (lambda: (feature_maps()[:2] + [paddle.zeros([2, 4, 2])], paddle.zeros(IMAGE)), {},
     ValueError, r"inputs\[2\]"),
    (lambda: (feature_maps()[:1] + feature_maps(n=3)[1:], paddle.zeros(IMAGE)), {},
     ValueError, r"inputs\[1\]"),
    (lambda: (feature_maps(), paddle.zeros([3, 300, 300])), {}, ValueError, "image"),
    (lambda: (feature_maps(), None), {}, TypeError, "image"),
    (lambda: (feature_maps()[:2], paddle.zeros(IMAGE)), {}, ValueError, "inputs"),
    (lambda: (feature_maps(channels=(4, 8, 4)), paddle.zeros(IMAGE)), {},
     ValueError, r"inputs\[1\]"),
    (lambda: ([paddle.zeros([2, 4, 8, 8], "float64")] + feature_maps()[1:], paddle.zeros(IMAGE)),
     {}, TypeError, r"inputs\[1\]"),
    (lambda: (feature_maps(dtype="float64"), paddle.zeros(IMAGE)), {}, TypeError, r"inputs\[0\]"),
    (lambda: ([paddle.zeros([2, 4, 8, 8], "int32")] + feature_maps()[1:], paddle.zeros(IMAGE)),
     {}, TypeError, r"inputs\[0\]"),
    (lambda: (feature_maps(sizes=(8, 4, 300)), paddle.zeros(IMAGE)), {},
     ValueError, r"inputs\[2\]"),
    (lambda: (feature_maps(sizes=(8, 0, 2)), paddle.zeros(IMAGE)), {}, ValueError, r"inputs\[1\]"),
    (lambda: (feature_maps(), paddle.zeros(IMAGE)), dict(kernel_size=3), ValueError,
     "kernel_size"),
    (lambda: (feature_maps(), paddle.zeros(IMAGE)), dict(kernel_size=[3, 1], pad="VALID"),
     ValueError, "kernel_size"),
]


@pytest.mark.parametrize("make,options,error,name", INPUT_ERRORS,
                         ids=[f"{i}-{e[3]}" for i, e in enumerate(INPUT_ERRORS)])
def test_input_errors(make, options, error, name):
    kwargs = dict(OK, **options)
    head = MultiBoxHead(kwargs.pop("in_channels"), **kwargs)
    inputs, image = make()
    with pytest.raises(error, match=rf"^{name}: expected"):
        head(inputs, image)


def test_static_errors_leave_no_parameters():
    """Static calls check the tensors and options before creating any parameter."""
    kwargs = {k: v for k, v in OK.items() if k != "in_channels"}
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            image = paddle.static.data("image", [-1, 3, 300, 300], "float32")
            inputs = [paddle.static.data(f"x{i}", [-1, 4, s, s], "float32")
                      for i, s in enumerate((8, 4, 2))]
            unknown_c = paddle.static.data("unknown_c", [-1, -1, 8, 8], "float32")
            with pytest.raises(ValueError, match=r"^inputs\[0\]: expected a known number"):
                multi_box_head([unknown_c] + inputs[1:], image, **kwargs)
            with pytest.raises(ValueError, match=r"^offset: expected"):
                multi_box_head(inputs, image, **dict(kwargs, offset=2.0))
            with pytest.raises(ValueError, match=r"^aspect_ratios: expected 4 entries"):
                multi_box_head(inputs + inputs[2:], image, **kwargs)
            with pytest.raises(ValueError, match=r"^image: expected"):
                multi_box_head(inputs, inputs[0][0], **kwargs)
            assert parameter_names(main) == []
            multi_box_head(inputs, image, **kwargs)
            assert len(parameter_names(main)) == 12
    finally:
        paddle.disable_static()


def test_multi_box_head_refuses_dygraph():
    with pytest.raises(RuntimeError, match="MultiBoxHead"):
        multi_box_head(feature_maps(), paddle.zeros(IMAGE),
                       **{k: v for k, v in OK.items() if k != "in_channels"})


def test_fluid_accepts():
    """What fluid silently accepted still works: None aspect ratios (1.0 only), a max entry <= 0
    (no max box), size lists longer than the inputs (extras ignored), step_h without step_w
    (ignored), a step of 0 (image size / map size), numpy numbers, 0/1 for bools, a float
    base_size, the 'SAME' padding."""
    image = paddle.zeros(IMAGE)
    base = MultiBoxHead([4, 4, 4], 300, 3, None, min_sizes=[30, 60, 111],
                        max_sizes=[[], 111.0, 162.0])
    assert [p.shape[0] for p in base.parameters()[::2]] == [4, 3, 8, 6, 8, 6]
    variants = [
        dict(max_sizes=[0, 111.0, 162.0], min_sizes=[30, 60, 111, 500]),
        dict(max_sizes=[[-1.0, 5.0], 111.0, 162.0, None], step_h=[1.0, 2.0, 3.0]),
        dict(max_sizes=[[], np.float32(111.0), 162], steps=[0.0, 75.0, 0.0],
             step_w=[37.5, 75.0, 150.0], step_h=[37.5, 75.0, 150.0]),
        dict(max_sizes=[[], 111.0, 162.0], base_size=512.5, flip=1, clip=0, name="head"),
    ]
    want = [t.numpy() for t in base(feature_maps(), image)]
    for options in variants:
        kwargs = dict(dict(base_size=300, min_sizes=[30, 60, 111]), **options)
        head = MultiBoxHead([4, 4, 4], num_classes=3, aspect_ratios=None, **kwargs)
        head.set_state_dict(base.state_dict())
        got = [t.numpy() for t in head(feature_maps(), image)]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    same = MultiBoxHead([4, 4, 4], 300, 3, None, min_sizes=[30, 60, 111],
                        max_sizes=[[], 111.0, 162.0], kernel_size=3, pad="same")
    assert list(same(feature_maps(), image)[0].shape) == list(want[0].shape)


# ---------------------------------------------------------------------------------------------
# a saved inference model, run by Paddle Inference without paddle_ssd_op

INFERENCE_SCRIPT = """\
import zlib  # before paddle: paddle 2.6.2 exports a zlib that crashes Python's
import sys
import numpy as np
from paddle import inference

model = [f for f in sys.argv[2:] if f.endswith((".json", ".pdmodel"))][0]
config = inference.Config(model, sys.argv[1] + ".pdiparams")
config.disable_gpu()
predictor = inference.create_predictor(config)
feeds = np.load("feeds.npz")
for name in predictor.get_input_names():
    predictor.get_input_handle(name).copy_from_cpu(feeds[name])
predictor.run()
np.savez("fetched.npz", *[predictor.get_output_handle(name).copy_to_cpu()
                          for name in predictor.get_output_names()])
assert not any(m == "paddle_ssd_op" or m.startswith("paddle_ssd_op.") for m in sys.modules), \
    "paddle_ssd_op was imported"
"""


def run_inference_model(tmp_path, feed_vars, fetch_vars, exe, program, feeds):
    """Saves the program as an inference model and runs it with paddle.inference in a fresh
    interpreter that does not import paddle_ssd_op; returns the fetched arrays."""
    prefix = tmp_path / "model"
    paddle.static.save_inference_model(str(prefix), feed_vars, fetch_vars, exe, program=program)
    np.savez(tmp_path / "feeds.npz", **feeds)
    (tmp_path / "infer.py").write_text(INFERENCE_SCRIPT)
    model_files = [str(f) for f in tmp_path.glob("model.*")]
    # (PADDLE_SSD_OP_NO_AUTOLOAD: the package's import hook may not import it either)
    proc = subprocess.run([sys.executable, "infer.py", str(prefix), *model_files], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PADDLE_SSD_OP_NO_AUTOLOAD="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    fetched = np.load(tmp_path / "fetched.npz")
    return [fetched[f"arr_{i}"] for i in range(len(fetch_vars))]


def test_inference_model_without_the_package(tmp_path):
    case = first_case(lambda c: len(c.inputs) > 2)
    paddle.enable_static()
    try:
        main, startup, feed_list, fetches = build_static([case], batch=-1)
        names = parameter_names(main)
        feed_vars = [var for var, _ in feed_list]
        feeds = {var.name: array for var, array in feed_list}
        exe = paddle.static.Executor(CPU)
        with paddle.static.scope_guard(paddle.static.Scope()):
            exe.run(startup)
            for name, w in zip(names, case.params):
                paddle.static.global_scope().find_var(name).get_tensor().set(w, CPU)
            expected = exe.run(main, feed=feeds, fetch_list=fetches)
            fetched = run_inference_model(tmp_path, feed_vars, fetches, exe, main, feeds)
    finally:
        paddle.disable_static()
    case.assert_matches(expected)
    for got, want in zip(fetched, expected):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# random configurations against the real fluid 1.8.5 (its venv: bash benchmarks/fluid_setup.sh)

ORACLE = Path(__file__).resolve().parent.parent / ".oracle-venv" / "bin" / "python"

# Run by fluid 1.8.5: writes cases in the golden format (plus float64 ones) for random settings
# beyond the golden set: one input, several min sizes per layer, [-1, 5] max entries, size lists
# longer than the inputs, step_w with step_h, steps of 0, aspect_ratios None, duplicate ratios,
# stride 2, kernel [3, 1] with pad [1, 0], 'SAME' padding.
FLUID_GENERATOR = """\
import json, sys
import numpy as np
import paddle.fluid as fluid

rng = np.random.RandomState(int(sys.argv[1]))
RATIOS = [[2.0], [2.0, 3.0], [1.0, 2.0], [2.0, 0.5], [3.0, 3.0], [1.5], [2.0, 1.0000001]]
CONVS = [{}, dict(kernel_size=3, pad=1), dict(kernel_size=[3, 1], pad=[1, 0]),
         dict(stride=2), dict(kernel_size=3, pad="SAME")]


def sizes(num_layers):
    mins, maxs = [], []
    for _ in range(num_layers):
        if rng.rand() < 0.3:
            low = sorted(rng.uniform(20, 200, 2).round(1).tolist())
            high = [v + float(rng.uniform(5, 80)) for v in low] if rng.rand() < 0.6 else []
        else:
            low = round(float(rng.uniform(20, 250)), 1)
            r = rng.rand()
            high = [] if r < 0.2 else [-1.0, 5.0] if r > 0.8 else low + float(rng.uniform(5, 99))
        mins.append(low)
        maxs.append(high)
    if num_layers > 2 and rng.rand() < 0.3:
        mins.append(99.0)
        maxs.append(150.0)
    return dict(min_sizes=mins, max_sizes=maxs)


def steps(num_layers):
    kind = rng.randint(4)
    pick = lambda values: [float(rng.choice(values)) for _ in range(num_layers)]
    return [{}, dict(steps=pick([0.0, 16.0, 30.0])),
            dict(step_w=pick([0.0, 16.0, 30.0]), step_h=pick([0.0, 20.0, 32.0])),
            dict(step_h=[10.0] * num_layers)][kind]


for k in range(int(sys.argv[3])):
    num_layers = int(rng.randint(1, 5))
    height, width = [(300, 300), (240, 320)][rng.randint(2)]
    cells = sorted(rng.choice([1, 2, 3, 5, 7, 10], num_layers).tolist(), reverse=True)
    maps = [(c, max(1, int(round(c * width / height)))) for c in cells]
    attrs = dict(base_size=int(rng.choice([300, 512])), num_classes=int(rng.choice([2, 3, 5])),
                 aspect_ratios=[RATIOS[rng.randint(len(RATIOS))] for _ in range(num_layers)],
                 offset=float(rng.choice([0.0, 0.5, 0.3])), flip=bool(rng.rand() < 0.6),
                 clip=bool(rng.rand() < 0.5), min_max_aspect_ratios_order=bool(rng.rand() < 0.5))
    if num_layers > 2 and rng.rand() < 0.3:
        attrs.update(min_ratio=int(rng.randint(5, 25)), max_ratio=int(rng.randint(60, 95)))
    else:
        attrs.update(sizes(num_layers))
    attrs.update(steps(num_layers))
    attrs.update(CONVS[rng.randint(len(CONVS))])
    if rng.rand() < 0.2:
        attrs["variance"] = [0.3, 0.1, 0.25, 0.2]
    if rng.rand() < 0.1:
        attrs["aspect_ratios"] = None
    dtype = "float64" if rng.rand() < 0.15 else "float32"
    n = int(rng.randint(1, 3))
    channels = [int(rng.choice([2, 3, 6])) for _ in range(num_layers)]
    main, startup = fluid.Program(), fluid.Program()
    with fluid.program_guard(main, startup), fluid.unique_name.guard():
        xs = [fluid.data("x%d" % i, [None, c, h, w], dtype)
              for i, (c, (h, w)) in enumerate(zip(channels, maps))]
        image = fluid.data("image", [None, 3, height, width], dtype)
        outputs = fluid.layers.multi_box_head(xs, image, **attrs)
    exe = fluid.Executor(fluid.CPUPlace())
    exe.run(startup)
    params = main.global_block().all_parameters()
    case = dict(attrs=json.dumps(attrs), num_inputs=num_layers, num_params=len(params),
                image_shape=np.array([n, 3, height, width]),
                param_names=json.dumps([p.name for p in params]))
    for i, p in enumerate(params):
        case["w%03d" % i] = rng.normal(0, 0.5, p.shape).astype(dtype)
        fluid.global_scope().find_var(p.name).get_tensor().set(case["w%03d" % i],
                                                                fluid.CPUPlace())
    feed = {"image": np.zeros(case["image_shape"], dtype)}
    for i, (c, (h, w)) in enumerate(zip(channels, maps)):
        case["x%d" % i] = feed["x%d" % i] = rng.normal(size=(n, c, h, w)).astype(dtype)
    results = exe.run(main, feed=feed, fetch_list=list(outputs))
    case.update(zip(["mbox_locs", "mbox_confs", "boxes", "variances"], results))
    np.savez("%s/random_%03d.npz" % (sys.argv[2], k), **case)
"""


@pytest.mark.slow
@pytest.mark.skipif(not ORACLE.exists(), reason="no fluid 1.8.5 venv (.oracle-venv)")
def test_random_against_fluid(tmp_path):
    (tmp_path / "generate.py").write_text(FLUID_GENERATOR)
    proc = subprocess.run([str(ORACLE), "generate.py", "11", str(tmp_path), "48"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    cases = [Golden(p) for p in sorted(tmp_path.glob("random_*.npz"))]
    assert len(cases) == 48 and {c.dtype for c in cases} == {"float32", "float64"}
    assert 1 in {len(c.inputs) for c in cases}
    for case in cases:
        case.assert_matches(run_dygraph(case, golden_head(case)))
    for start in range(0, len(cases), 12):
        group = cases[start:start + 12]
        for case, outputs in zip(group, run_static(group)):
            case.assert_matches(outputs)
