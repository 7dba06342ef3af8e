"""The Paddle op on GPU tensors: its CUDA kernels (paddle_ssd_op.cuda.set_kernels_enabled(True),
what PADDLE_SSD_OP_CUDA_KERNELS=1 turns on) against its host fallback (copy to the host, CPU
kernels, copy back), on the golden cases of the real fluid 1.8.5 op, in dygraph and in static
programs fed with LoDTensors.

* Decisions are identical: match indices and target classes compare exactly.
* Loss within 1e-6 relative (float32); gradients within 1e-6 of the array's largest magnitude
  (encode's log differs by an ulp between CUDA and glibc, and smooth-L1's gradient is the
  difference location - target, see test_cuda_core.py).
* Two runs of the kernels give bit-identical results.
* gt_label / gt_lengths tensors on the GPU are converted and checked on the device: a bad label
  gives its image a NaN loss instead of the fallback's ValueError.

Skipped, with the reason, unless Paddle is built with CUDA, a CUDA device is visible and the
package was built with its CUDA kernels (scripts/check_paddle_gpu_build.sh builds one).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

import paddle
import paddle_ssd_op

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cases

from cases import GOLDEN_FILES, Case  # noqa: E402

REL = 1e-6

if not paddle.is_compiled_with_cuda():
    pytest.skip("Paddle is not compiled with CUDA (paddlepaddle-gpu needed)", allow_module_level=True)
if paddle.device.cuda.device_count() < 1:
    pytest.skip("no CUDA device is visible", allow_module_level=True)
if not paddle_ssd_op.cuda.kernels_built():
    pytest.skip("paddle_ssd_op was built without its CUDA kernels (PADDLE_SSD_OP_CPU_ONLY=1?)",
                allow_module_level=True)


@pytest.fixture(autouse=True)
def _gpu_and_fallback_restored():
    enabled = paddle_ssd_op.cuda.kernels_enabled()
    paddle.set_device("gpu")
    yield
    paddle_ssd_op.cuda.set_kernels_enabled(enabled)


def _gpu(x):
    return paddle.to_tensor(x, place=paddle.CUDAPlace(0))


def run_dygraph(case, kernels, labels=None, lengths_on_gpu=False):
    paddle_ssd_op.cuda.set_kernels_enabled(kernels)
    loc = paddle.to_tensor(case.location, place=paddle.CUDAPlace(0), stop_gradient=False)
    conf = paddle.to_tensor(case.confidence, place=paddle.CUDAPlace(0), stop_gradient=False)
    var = None if case.prior_box_var is None else _gpu(case.prior_box_var)
    lengths = np.asarray(case.gt_lengths, np.int64)
    lengths = _gpu(lengths) if lengths_on_gpu else [int(n) for n in lengths]
    label = _gpu(case.gt_label if labels is None else labels)
    loss, targets = paddle_ssd_op.ssd_loss(loc, conf, _gpu(case.gt_box), label,
                                           _gpu(case.prior_box), var, gt_lengths=lengths,
                                           return_targets=True, **case.attrs)
    assert loss.place.is_gpu_place() and targets["match_indices"].place.is_gpu_place()
    up = case.upstream.astype(case.location.dtype).reshape(loss.shape)
    paddle.sum(loss * _gpu(up)).backward()
    assert loc.grad.place.is_gpu_place() and conf.grad.place.is_gpu_place()
    return {"loss": loss.numpy(), "grad_location": loc.grad.numpy(),
            "grad_confidence": conf.grad.numpy(),
            "match": targets["match_indices"].numpy(), "target_class": targets["target_class"].numpy()}


def run_static(case, kernels):
    """A fluid-style program on the GPU place; gt_box / gt_label are LoDTensors."""
    paddle_ssd_op.cuda.set_kernels_enabled(kernels)
    dtype = str(case.location.dtype)
    n = case.location.shape[0]
    main, startup = paddle.static.Program(), paddle.static.Program()
    paddle.enable_static()
    try:
        with paddle.static.program_guard(main, startup):
            loc = paddle.static.data("location", list(case.location.shape), dtype)
            conf = paddle.static.data("confidence", list(case.confidence.shape), dtype)
            loc.stop_gradient = False
            conf.stop_gradient = False
            box = paddle.static.data("gt_box", [-1, 4], dtype, lod_level=1)
            label = paddle.static.data("gt_label", [-1] + list(case.gt_label.shape[1:]),
                                       str(case.gt_label.dtype), lod_level=1)
            prior = paddle.static.data("prior_box", list(case.prior_box.shape), dtype)
            var = None
            if case.prior_box_var is not None:
                var = paddle.static.data("prior_box_var", list(case.prior_box_var.shape), dtype)
            up = paddle.static.data("upstream", [n, 1], dtype)
            loss, targets = paddle_ssd_op.ssd_loss(loc, conf, box, label, prior, var,
                                                   return_targets=True, **case.attrs)
            grads = paddle.static.gradients([paddle.sum(loss * up)], [loc, conf])
        place = paddle.CUDAPlace(0)
        lod = [[int(v) for v in case.gt_lengths]]
        feed = {"location": case.location, "confidence": case.confidence,
                "prior_box": case.prior_box,
                "upstream": case.upstream.astype(dtype).reshape(n, 1),
                "gt_box": paddle.base.create_lod_tensor(case.gt_box, lod, place),
                "gt_label": paddle.base.create_lod_tensor(case.gt_label, lod, place)}
        if case.prior_box_var is not None:
            feed["prior_box_var"] = case.prior_box_var
        exe = paddle.static.Executor(place)
        exe.run(startup)
        out = exe.run(main, feed=feed, fetch_list=[loss, targets["match_indices"],
                                                   targets["target_class"]] + list(grads))
    finally:
        paddle.disable_static()
    out = [np.asarray(o) for o in out]
    return dict(zip(("loss", "match", "target_class", "grad_location", "grad_confidence"), out))


def assert_close_scaled(got, want, name):
    scale = float(np.abs(want).max()) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=REL, atol=REL * max(scale, 1e-30), err_msg=name)


def assert_agree(kernels, fallback, where):
    for key in ("match", "target_class"):
        np.testing.assert_array_equal(kernels[key], fallback[key], err_msg=f"{where}: {key}")
    np.testing.assert_allclose(kernels["loss"], fallback["loss"], rtol=REL, atol=0,
                               err_msg=f"{where}: loss")
    for key in ("grad_location", "grad_confidence"):
        assert kernels[key].dtype == fallback[key].dtype, (where, key)
        assert_close_scaled(kernels[key], fallback[key], f"{where}: {key}")


def assert_bit_identical(a, b, where):
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), (where, key)


GOLDEN_IDS = [p.stem for p in GOLDEN_FILES]


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=GOLDEN_IDS)
def test_golden_dygraph_kernels_match_fallback(path):
    case = Case(path)
    fallback = run_dygraph(case, kernels=False)
    first, second = run_dygraph(case, kernels=True), run_dygraph(case, kernels=True)
    assert_agree(first, fallback, case.name)
    assert_bit_identical(first, second, case.name)
    case.assert_matches(first["loss"], first["grad_location"], first["grad_confidence"])


@pytest.mark.parametrize("path", GOLDEN_FILES[::5], ids=GOLDEN_IDS[::5])
def test_golden_static_lod_kernels_match_fallback(path):
    case = Case(path)
    fallback = run_static(case, kernels=False)
    first, second = run_static(case, kernels=True), run_static(case, kernels=True)
    assert_agree(first, fallback, case.name)
    assert_bit_identical(first, second, case.name)


@pytest.mark.parametrize("path", GOLDEN_FILES[::20], ids=GOLDEN_IDS[::20])
def test_gt_lengths_on_gpu(path):
    """Box counts as a GPU tensor: turned into offsets on the device, same result."""
    case = Case(path)
    assert_bit_identical(run_dygraph(case, kernels=True, lengths_on_gpu=True),
                         run_dygraph(case, kernels=True), case.name)


def _case_with_bad_label(bad):
    """A golden case with >= 2 images, each with gts, and a bad label in image 1."""
    cases = (Case(p) for p in GOLDEN_FILES)
    case = next(c for c in cases if c.gt_lengths.size >= 2 and (c.gt_lengths > 0).all())
    labels = case.gt_label.astype(np.float32 if np.isnan(bad) else case.gt_label.dtype)
    labels.reshape(-1)[case.gt_lengths[0]] = bad  # the first gt of image 1
    return case, labels


@pytest.mark.parametrize("bad", [-1, 10 ** 6, float("nan")])
def test_bad_gpu_label_kernels_nan_fallback_raises(bad):
    case, labels = _case_with_bad_label(bad)
    got = run_dygraph(case, kernels=True, labels=labels)
    assert np.isnan(got["loss"][1]).all() and (got["match"][1] == -1).all()
    assert not got["grad_location"][1].any() and not got["grad_confidence"][1].any()
    with pytest.raises(ValueError, match="gt_label"):
        run_dygraph(case, kernels=False, labels=labels)


def test_bad_cpu_label_raises_with_kernels():
    """Labels on the CPU are checked on the host, with the kernels too."""
    case, labels = _case_with_bad_label(-1)
    paddle_ssd_op.cuda.set_kernels_enabled(True)
    loc, conf = _gpu(case.location), _gpu(case.confidence)
    with pytest.raises(ValueError, match="gt_label"):
        paddle_ssd_op.ssd_loss(loc, conf, _gpu(case.gt_box),
                               paddle.to_tensor(labels, place=paddle.CPUPlace()),
                               _gpu(case.prior_box), gt_lengths=[int(n) for n in case.gt_lengths])
