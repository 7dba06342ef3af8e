"""ssd_loss in every execution mode Paddle offers: dygraph, static programs (PIR on 3.x, legacy IR
on 2.6), ``paddle.jit.to_static``, training loops, partial gradients, saving and loading in a fresh
process, the convenience forms of the gt arguments, and the loss shape declared at graph-build time.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest

import paddle_ssd_op
from cases import DATA, Case

PIR = int(paddle.__version__.split(".")[0]) >= 3
CPU = paddle.CPUPlace()
VARIANCE = [0.1, 0.1, 0.2, 0.2]


# ---------------------------------------------------------------------------------------------
# inputs

def make_priors(grid=4, size=0.35):
    """grid x grid priors of side ``size`` centred on the cells of the unit square."""
    c = (np.arange(grid, dtype=np.float32) + 0.5) / grid
    cx, cy = np.meshgrid(c, c)
    cx, cy = cx.reshape(-1), cy.reshape(-1)
    h = size / 2
    return np.stack([cx - h, cy - h, cx + h, cy + h], axis=1).astype(np.float32)


def make_batch(lengths=(2, 0, 3), num_classes=4, feat_dim=8, grid=4, seed=0):
    """A small batch: per-prior features, random predictions and gt boxes near some priors (so
    that priors match), ``lengths[i]`` boxes in image i."""
    rng = np.random.default_rng(seed)
    prior = make_priors(grid)
    n, num_priors, ng = len(lengths), prior.shape[0], int(sum(lengths))
    picked = prior[rng.integers(0, num_priors, ng)]
    gt_box = np.clip(picked + rng.uniform(-0.04, 0.04, picked.shape), 0, 1).astype(np.float32)
    return dict(
        features=rng.standard_normal((n, num_priors, feat_dim)).astype(np.float32),
        location=rng.standard_normal((n, num_priors, 4)).astype(np.float32),
        confidence=rng.standard_normal((n, num_priors, num_classes)).astype(np.float32),
        gt_box=gt_box,
        gt_label=rng.integers(1, num_classes, (ng, 1)).astype(np.int64),
        gt_lengths=np.asarray(lengths, np.int64),
        prior_box=prior,
    )


def golden_case():
    return Case(DATA / "golden" / "case_1_0000.npz")  # N=2, Np=44, C=10, 2 and 4 gt boxes


def lod_tensor(array, lengths):
    return paddle.base.create_lod_tensor(array, [[int(v) for v in lengths]], CPU)


# ---------------------------------------------------------------------------------------------
# a small detection head: per-prior features -> location, confidence -> loss

class Head(paddle.nn.Layer):
    def __init__(self, feat_dim=8, num_classes=4):
        super().__init__()
        self.loc = paddle.nn.Linear(feat_dim, 4)
        self.conf = paddle.nn.Linear(feat_dim, num_classes)

    def forward(self, features, gt_box, gt_label, prior_box, gt_lengths):
        return paddle_ssd_op.ssd_loss(self.loc(features), self.conf(features), gt_box, gt_label,
                                      prior_box, VARIANCE, gt_lengths=gt_lengths)


def head_input_spec(b):
    spec = paddle.static.InputSpec
    feat_dim, num_classes = b["features"].shape[2], b["confidence"].shape[2]
    num_priors = b["prior_box"].shape[0]
    return [spec([None, num_priors, feat_dim], "float32", "features"),
            spec([None, 4], "float32", "gt_box"),
            spec([None, 1], "int64", "gt_label"),
            spec([num_priors, 4], "float32", "prior_box"),
            spec([None], "int64", "gt_lengths")]


def head_args(b):
    return [paddle.to_tensor(b[k]) for k in
            ("features", "gt_box", "gt_label", "prior_box", "gt_lengths")]


def twin_heads(b, seed=1):
    """Two heads with the same weights: one stays eager, one goes through to_static."""
    paddle.seed(seed)
    eager = Head(b["features"].shape[2], b["confidence"].shape[2])
    other = Head(b["features"].shape[2], b["confidence"].shape[2])
    other.set_state_dict(eager.state_dict())
    static = paddle.jit.to_static(other, input_spec=head_input_spec(b), full_graph=True)
    return eager, static


# ---------------------------------------------------------------------------------------------
# 1. to_static

def test_to_static_equals_eager_with_gradients():
    b = make_batch()
    eager, static = twin_heads(b)
    out_e = eager(*head_args(b))
    out_s = static(*head_args(b))
    assert out_s.shape == out_e.shape == [3, 1]
    np.testing.assert_array_equal(out_s.numpy(), out_e.numpy())
    assert float(out_e.sum()) > 0

    upstream = paddle.to_tensor(np.array([[1.0], [2.0], [-0.5]], np.float32))
    (out_e * upstream).sum().backward()
    (out_s * upstream).sum().backward()
    for (name, p_e), (_, p_s) in zip(eager.named_parameters(), static.named_parameters()):
        assert p_s.grad is not None, name
        assert np.abs(p_e.grad.numpy()).sum() > 0, name
        np.testing.assert_array_equal(p_s.grad.numpy(), p_e.grad.numpy(), err_msg=name)


def test_to_static_training_reduces_loss():
    b = make_batch()
    _, static = twin_heads(b)
    opt = paddle.optimizer.SGD(learning_rate=0.5, parameters=static.parameters())
    losses = []
    for _ in range(8):
        loss = static(*head_args(b)).sum()
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses


# ---------------------------------------------------------------------------------------------
# 2. only one of location / confidence needs a gradient

def _grads_dygraph(case, needs):
    loc = paddle.to_tensor(case.location, stop_gradient="location" not in needs)
    conf = paddle.to_tensor(case.confidence, stop_gradient="confidence" not in needs)
    loss = paddle_ssd_op.ssd_loss(loc, conf, paddle.to_tensor(case.gt_box),
                                  paddle.to_tensor(case.gt_label), paddle.to_tensor(case.prior_box),
                                  paddle.to_tensor(case.prior_box_var),
                                  gt_lengths=case.gt_lengths.tolist(), **case.attrs)
    (loss * paddle.to_tensor(case.upstream)).sum().backward()
    return {"location": loc.grad, "confidence": conf.grad}, loss.numpy()


def _grads_static(case, needs):
    main, startup = paddle.static.Program(), paddle.static.Program()
    paddle.enable_static()
    try:
        with paddle.static.program_guard(main, startup):
            loc = paddle.static.data("location", list(case.location.shape), "float32")
            conf = paddle.static.data("confidence", list(case.confidence.shape), "float32")
            loc.stop_gradient = "location" not in needs
            conf.stop_gradient = "confidence" not in needs
            box = paddle.static.data("gt_box", [-1, 4], "float32", lod_level=1)
            label = paddle.static.data("gt_label", [-1, 1], "float32", lod_level=1)
            prior = paddle.static.data("prior_box", list(case.prior_box.shape), "float32")
            var = paddle.static.data("prior_box_var", list(case.prior_box_var.shape), "float32")
            up = paddle.static.data("upstream", list(case.upstream.shape), "float32")
            loss = paddle_ssd_op.ssd_loss(loc, conf, box, label, prior, var, **case.attrs)
            wrt = [v for k, v in (("location", loc), ("confidence", conf)) if k in needs]
            grads = paddle.static.gradients([paddle.sum(loss * up)], wrt)
        exe = paddle.static.Executor(CPU)
        exe.run(startup)
        feed = {"location": case.location, "confidence": case.confidence,
                "gt_box": lod_tensor(case.gt_box, case.gt_lengths),
                "gt_label": lod_tensor(case.gt_label, case.gt_lengths),
                "prior_box": case.prior_box, "prior_box_var": case.prior_box_var,
                "upstream": case.upstream}
        out = exe.run(main, feed=feed, fetch_list=[loss] + list(grads))
    finally:
        paddle.disable_static()
    names = [k for k in ("location", "confidence") if k in needs]
    return dict(zip(names, out[1:])), out[0]


class LossLayer(paddle.nn.Layer):
    """ssd_loss with fixed attributes, as a layer (2.6's to_static does not see closures)."""

    def __init__(self, attrs):
        super().__init__()
        self.attrs = attrs

    def forward(self, loc, conf, box, label, prior, var, lengths):
        return paddle_ssd_op.ssd_loss(loc, conf, box, label, prior, var, gt_lengths=lengths,
                                      **self.attrs)


def _grads_to_static(case, needs):
    spec = paddle.static.InputSpec
    np_, c = case.confidence.shape[1:]
    fn = paddle.jit.to_static(LossLayer(case.attrs), full_graph=True, input_spec=[
        spec([None, np_, 4], "float32"), spec([None, np_, c], "float32"),
        spec([None, 4], "float32"), spec([None, 1], "float32"), spec([np_, 4], "float32"),
        spec([np_, 4], "float32"), spec([None], "int64")])
    loc = paddle.to_tensor(case.location, stop_gradient="location" not in needs)
    conf = paddle.to_tensor(case.confidence, stop_gradient="confidence" not in needs)
    loss = fn(loc, conf, *[paddle.to_tensor(a) for a in (
        case.gt_box, case.gt_label, case.prior_box, case.prior_box_var, case.gt_lengths)])
    (loss * paddle.to_tensor(case.upstream)).sum().backward()
    return {"location": loc.grad, "confidence": conf.grad}, loss.numpy()


PARTIAL_RUNNERS = {"dygraph": _grads_dygraph, "static": _grads_static,
                   "to_static": _grads_to_static}


@pytest.mark.parametrize("needs", ["location", "confidence"])
@pytest.mark.parametrize("mode", sorted(PARTIAL_RUNNERS))
def test_only_one_input_needs_gradient(mode, needs):
    case = golden_case()
    run = PARTIAL_RUNNERS[mode]
    full, full_loss = run(case, ("location", "confidence"))
    part, part_loss = run(case, (needs,))
    np.testing.assert_array_equal(part_loss, full_loss)
    other = "confidence" if needs == "location" else "location"
    if mode != "static":  # a frozen eager tensor gets no gradient
        assert part[other] is None
    grad = np.asarray(part[needs])
    np.testing.assert_array_equal(grad, np.asarray(full[needs]))
    expected = case.grad_location if needs == "location" else case.grad_confidence
    np.testing.assert_allclose(grad, expected, rtol=2e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# 3. training: static program (append_backward, minimize) and dygraph

def _static_head_program(b, lr=None):
    """fc head on per-prior features; gt_box/gt_label are lod_level=1 data. Returns the
    programs, the data variables by name, the loss [N, 1] and its sum."""
    _, num_priors, feat_dim = b["features"].shape
    num_classes = b["confidence"].shape[2]
    main, startup = paddle.static.Program(), paddle.static.Program()
    main.random_seed = startup.random_seed = 7
    with paddle.static.program_guard(main, startup):
        feats = paddle.static.data("features", [-1, num_priors, feat_dim], "float32")
        box = paddle.static.data("gt_box", [-1, 4], "float32", lod_level=1)
        label = paddle.static.data("gt_label", [-1, 1], "int64", lod_level=1)
        prior = paddle.static.data("prior_box", [num_priors, 4], "float32")
        loc = paddle.static.nn.fc(feats, 4, num_flatten_dims=2)
        conf = paddle.static.nn.fc(feats, num_classes, num_flatten_dims=2)
        loss = paddle_ssd_op.ssd_loss(loc, conf, box, label, prior, VARIANCE)
        total = paddle.sum(loss)
        if lr is not None:
            paddle.optimizer.SGD(learning_rate=lr).minimize(total)
    feeds = {"features": feats, "gt_box": box, "gt_label": label, "prior_box": prior}
    return main, startup, feeds, loss, total


def _static_feed(b):
    return {"features": b["features"], "prior_box": b["prior_box"],
            "gt_box": lod_tensor(b["gt_box"], b["gt_lengths"]),
            "gt_label": lod_tensor(b["gt_label"], b["gt_lengths"])}


def test_static_append_backward_gives_parameter_gradients():
    b = make_batch()
    paddle.enable_static()
    try:
        main, startup, _, _, total = _static_head_program(b)
        with paddle.static.program_guard(main, startup):
            params_grads = paddle.static.append_backward(total)
        assert len(params_grads) == 4  # two fc weights and biases
        exe = paddle.static.Executor(CPU)
        exe.run(startup)
        out = exe.run(main, feed=_static_feed(b),
                      fetch_list=[total] + [g for _, g in params_grads])
    finally:
        paddle.disable_static()
    assert np.isfinite(out[0]) and out[0] > 0
    for grad in out[1:]:
        assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_static_minimize_reduces_loss():
    b = make_batch()
    paddle.enable_static()
    try:
        main, startup, _, _, total = _static_head_program(b, lr=0.5)
        exe = paddle.static.Executor(CPU)
        exe.run(startup)
        feed = _static_feed(b)
        losses = [float(exe.run(main, feed=feed, fetch_list=[total])[0]) for _ in range(20)]
    finally:
        paddle.disable_static()
    assert losses[-1] < 0.5 * losses[0], losses


def test_dygraph_training_reduces_loss():
    b = make_batch()
    paddle.seed(3)
    head = Head(b["features"].shape[2], b["confidence"].shape[2])
    opt = paddle.optimizer.SGD(learning_rate=0.5, parameters=head.parameters())
    losses = []
    for _ in range(20):
        loss = head(*head_args(b)).sum()
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses


# ---------------------------------------------------------------------------------------------
# 4. saving, then loading in a fresh process: one that imports paddle_ssd_op first (registering
# fused_ssd_loss), and one that does not, where the installed paddle_ssd_op_autoload hook imports
# it when Paddle loads a model that needs the op.

FRESH_HEADER = """\
import zlib  # before paddle: paddle 2.6.2 exports a zlib that crashes Python's
import sys
import numpy as np
import paddle
"""
IMPORTS = ("imported", "autoloaded")


def run_fresh(tmp_path, body, imports="imported", env=None):
    """Runs ``body`` in a new interpreter of this venv, in tmp_path (not the source checkout),
    after ``import paddle_ssd_op`` or, when autoloaded, checking at the end that loading the
    model imported it."""
    script = tmp_path / "fresh.py"
    if imports == "imported":
        script.write_text(FRESH_HEADER + "import paddle_ssd_op\n" + textwrap.dedent(body))
    else:  # "autoloaded", or "none" with the hook turned off
        script.write_text(FRESH_HEADER + "assert 'paddle_ssd_op' not in sys.modules\n"
                          + textwrap.dedent(body) + "assert ('paddle_ssd_op' in sys.modules) == "
                          + repr(imports == "autoloaded") + "\n")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=None if env is None else {**os.environ, **env})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]


def saved_op_names(folder, prefix):
    """The saved program files (.pdmodel on 2.6, .json on 3.x PIR) that hold the fused op."""
    return [f.name for f in folder.glob(prefix + ".*") if b"fused_ssd_loss" in f.read_bytes()]


@pytest.mark.parametrize("imports", IMPORTS)
def test_jit_save_load_in_fresh_process(tmp_path, imports):
    batches = [make_batch(), make_batch(lengths=(4, 1), seed=5)]  # N = 3, then N = 2
    _, static = twin_heads(batches[0])
    expected = [static(*head_args(b)).numpy() for b in batches]
    paddle.jit.save(static, str(tmp_path / "head"), input_spec=head_input_spec(batches[0]))
    assert saved_op_names(tmp_path, "head")
    for i, b in enumerate(batches):
        np.savez(tmp_path / f"in{i}.npz", **b)
    run_fresh(tmp_path, """
        layer = paddle.jit.load("head")
        for i in range(2):
            d = np.load(f"in{i}.npz")
            out = layer(*[paddle.to_tensor(d[k]) for k in
                          ("features", "gt_box", "gt_label", "prior_box", "gt_lengths")])
            np.save(f"out{i}.npy", out.numpy())
    """, imports)
    for i, want in enumerate(expected):
        got = np.load(tmp_path / f"out{i}.npy")
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def save_inference_model(tmp_path, b):
    """Saves the static head program fed with LoD (tmp_path/infer.*) and its input (in.npz);
    returns its loss here."""
    paddle.enable_static()
    try:
        main, startup, feeds, loss, _ = _static_head_program(b)
        exe = paddle.static.Executor(CPU)
        exe.run(startup)
        expected, = exe.run(main, feed=_static_feed(b), fetch_list=[loss])
        paddle.static.save_inference_model(str(tmp_path / "infer"), list(feeds.values()), [loss],
                                           exe, program=main)
    finally:
        paddle.disable_static()
    assert saved_op_names(tmp_path, "infer")
    np.savez(tmp_path / "in.npz", **b)
    return expected


LOAD_AND_RUN_INFERENCE_MODEL = """
    paddle.enable_static()
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    program, feed_names, fetch_targets = paddle.static.load_inference_model("infer", exe)
    assert sorted(feed_names) == ["features", "gt_box", "gt_label", "prior_box"], feed_names
    d = np.load("in.npz")
    lod = [d["gt_lengths"].tolist()]
    out, = exe.run(program, fetch_list=fetch_targets, feed={
        "features": d["features"], "prior_box": d["prior_box"],
        "gt_box": paddle.base.create_lod_tensor(d["gt_box"], lod, place),
        "gt_label": paddle.base.create_lod_tensor(d["gt_label"], lod, place)})
    np.save("out.npy", out)
"""


@pytest.mark.parametrize("imports", IMPORTS)
def test_inference_model_with_lod_feed_in_fresh_process(tmp_path, imports):
    expected = save_inference_model(tmp_path, make_batch())
    assert expected.shape == (3, 1)
    run_fresh(tmp_path, LOAD_AND_RUN_INFERENCE_MODEL, imports)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_inference_predictor_in_fresh_process(tmp_path):
    """paddle.inference (Paddle Inference's Python API), in a process that never imports
    paddle_ssd_op itself."""
    expected = save_inference_model(tmp_path, make_batch())
    run_fresh(tmp_path, """
        import glob
        from paddle import inference
        program = (glob.glob("infer.json") + glob.glob("infer.pdmodel"))[0]
        config = inference.Config(program, "infer.pdiparams")
        config.disable_gpu()
        predictor = inference.create_predictor(config)
        d = np.load("in.npz")
        lod = [[0] + np.cumsum(d["gt_lengths"]).tolist()]
        for name in predictor.get_input_names():
            handle = predictor.get_input_handle(name)
            handle.copy_from_cpu(d[name])
            if name in ("gt_box", "gt_label"):
                handle.set_lod(lod)
        predictor.run()
        np.save("out.npy", predictor.get_output_handle(predictor.get_output_names()[0])
                .copy_to_cpu())
    """, "autoloaded")
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-6)


def test_forgotten_import_without_the_hook_is_a_python_error(tmp_path):
    """With PADDLE_SSD_OP_NO_AUTOLOAD=1 and no import, running the model fails with Paddle's own
    RuntimeError (docs/errors.md lists them and the cure), not a crash."""
    save_inference_model(tmp_path, make_batch())
    run_fresh(tmp_path, "try:\n" + textwrap.indent(textwrap.dedent(LOAD_AND_RUN_INFERENCE_MODEL),
                                                    "    ") + """
except RuntimeError as e:
    assert "fused_ssd_loss" in str(e) or "op outputs (6)" in str(e), e
else:
    raise AssertionError("the model ran without its op")
""", "none", env={"PADDLE_SSD_OP_NO_AUTOLOAD": "1"})


# ---------------------------------------------------------------------------------------------
# 5. lists of per-image gt tensors

def test_per_image_lists_equal_gt_lengths():
    b = make_batch(lengths=(2, 0, 3))
    offsets = np.concatenate([[0], np.cumsum(b["gt_lengths"])])
    boxes = [paddle.to_tensor(b["gt_box"][s:e]) for s, e in zip(offsets[:-1], offsets[1:])]
    labels = [paddle.to_tensor(b["gt_label"][s:e]) for s, e in zip(offsets[:-1], offsets[1:])]
    assert boxes[1].shape == [0, 4] and labels[1].shape == [0, 1]

    def run(gt_box, gt_label, **kw):
        loc = paddle.to_tensor(b["location"], stop_gradient=False)
        conf = paddle.to_tensor(b["confidence"], stop_gradient=False)
        loss = paddle_ssd_op.ssd_loss(loc, conf, gt_box, gt_label,
                                      paddle.to_tensor(b["prior_box"]), VARIANCE, **kw)
        loss.sum().backward()
        return loss.numpy(), loc.grad.numpy(), conf.grad.numpy()

    by_list = run(boxes, labels)
    by_lengths = run(paddle.to_tensor(b["gt_box"]), paddle.to_tensor(b["gt_label"]),
                     gt_lengths=paddle.to_tensor(b["gt_lengths"]))
    assert by_list[0].shape == (3, 1)
    for got, want in zip(by_list, by_lengths):
        np.testing.assert_array_equal(got, want)
    # the image without boxes has no positive, hence (max_negative mining) no negative either
    assert by_list[0][1, 0] == 0 and by_list[0][0, 0] > 0 and by_list[0][2, 0] > 0
    assert not by_list[1][1].any() and not by_list[2][1].any()


# ---------------------------------------------------------------------------------------------
# 6. N > 1 without any per-image layout of the gt

def test_dygraph_batch_without_gt_lengths_raises():
    b = make_batch(lengths=(2, 1, 3))
    with pytest.raises(ValueError, match="gt_lengths"):
        paddle_ssd_op.ssd_loss(*[paddle.to_tensor(b[k]) for k in (
            "location", "confidence", "gt_box", "gt_label", "prior_box")])


def _static_without_lod(b, lod_level):
    """A batch of 3 images whose gt is fed as plain arrays: no LoD, no gt_lengths."""
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            data = {k: paddle.static.data(k, list(b[k].shape), str(b[k].dtype),
                                          lod_level=lod_level if k.startswith("gt") else 0)
                    for k in ("location", "confidence", "gt_box", "gt_label", "prior_box")}
            loss = paddle_ssd_op.ssd_loss(data["location"], data["confidence"], data["gt_box"],
                                          data["gt_label"], data["prior_box"])
        exe = paddle.static.Executor(CPU)
        exe.run(startup)
        exe.run(main, feed={k: b[k] for k in data}, fetch_list=[loss])
    finally:
        paddle.disable_static()


@pytest.mark.parametrize("lod_level", [0, 1])
def test_static_batch_without_lod_raises(lod_level):
    # a ValueError that names the fix, not a crash, in every mode of both versions
    with pytest.raises(ValueError, match="gt_lengths"):
        _static_without_lod(make_batch(lengths=(2, 1, 3)), lod_level)


# ---------------------------------------------------------------------------------------------
# 7. static output shape

@pytest.mark.parametrize("n", [2, -1])
def test_static_loss_shape_is_n_by_1(n):
    b = make_batch(lengths=(2, 3))
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            loc = paddle.static.data("location", [n, 16, 4], "float32")
            conf = paddle.static.data("confidence", [n, 16, 4], "float32")
            box = paddle.static.data("gt_box", [-1, 4], "float32", lod_level=1)
            label = paddle.static.data("gt_label", [-1, 1], "int64", lod_level=1)
            prior = paddle.static.data("prior_box", [16, 4], "float32")
            loss = paddle_ssd_op.ssd_loss(loc, conf, box, label, prior)
            assert type(loss).__name__ == ("Value" if PIR else "Variable")
            assert list(loss.shape) == [n, 1]  # fluid declared [N * Np, 1]
        exe = paddle.static.Executor(CPU)
        exe.run(startup)
        out, = exe.run(main, fetch_list=[loss], feed={
            "location": b["location"], "confidence": b["confidence"],
            "prior_box": b["prior_box"], "gt_box": lod_tensor(b["gt_box"], b["gt_lengths"]),
            "gt_label": lod_tensor(b["gt_label"], b["gt_lengths"])})
    finally:
        paddle.disable_static()
    assert out.shape == (2, 1)


def test_to_static_loss_shape_is_n_by_1():
    _, static = twin_heads(make_batch())
    out = static.forward.concrete_program.outputs[0]  # the program built from the input_spec
    assert list(out.shape) == [-1, 1]
