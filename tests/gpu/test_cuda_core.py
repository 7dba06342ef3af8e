"""The CUDA path of the core (module ``_core_cuda``, src/cuda/core_cuda_module.cu) against the CPU
core (``_core``), call for call with the same NumPy inputs.

* Decisions are identical: the saved ``match`` and ``target_class`` arrays compare exactly, and so
  do the softmax row maxima (and, in float32, the row sums: the GPU sums the same lanes in the same
  order with the shared exp, and float32 ``grad_confidence``, which only uses the shared exp).
* Values: loss and gradients within 1e-6 relative in float32 (1e-10 in float64); gradients and
  loc_target are compared relative to the array's largest magnitude, since log (encode) differs by
  an ulp between CUDA and glibc, and smooth-L1's gradient is the difference loc - target.
* Two runs give bit-identical outputs.

Skipped, with the reason, when no CUDA build of the module can be imported or no CUDA device is
visible. The modules are looked up as ``paddle_ssd_op._core_cuda`` / ``paddle_ssd_op._core``, then
as top-level ``_core_cuda`` / ``_core`` (e.g. PYTHONPATH=build/cuda after
``scripts/check_cuda_compile.sh --link``); the environment variables PADDLE_SSD_OP_CORE_CUDA and
PADDLE_SSD_OP_CORE name other modules.

Without a GPU, tests/gpu/emu/build.sh builds the kernels for a host emulation of CUDA
(``_core_cuda_emu``) and runs this file against it: a check of the kernels' logic only (see
tests/gpu/emu/cuda_emu.h for what it cannot check).
"""
import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cases, reference

from cases import GOLDEN_FILES, Case  # noqa: E402
from reference import _labels_to_int  # noqa: E402

REL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-10}
ATTR_KEYS = ("background_label", "overlap_threshold", "neg_pos_ratio", "neg_overlap",
             "loc_loss_weight", "conf_loss_weight", "match_type", "mining_type", "normalize")


def _import_first(names):
    errors = []
    for name in names:
        try:
            return importlib.import_module(name), None
        except ImportError as e:  # also a module built for another Python / Paddle
            errors.append("%s: %s" % (name, e))
    return None, "; ".join(errors)


def _candidates(env, names):
    return [os.environ[env]] if os.environ.get(env) else names


@pytest.fixture(scope="module")
def cuda():
    mod, err = _import_first(_candidates("PADDLE_SSD_OP_CORE_CUDA",
                                         ["paddle_ssd_op._core_cuda", "_core_cuda"]))
    if mod is None:
        pytest.skip("no CUDA build of the core module (_core_cuda) is importable: " + err)
    if mod.device_count() < 1:
        pytest.skip("_core_cuda is built but no CUDA device is visible")
    return mod


@pytest.fixture(scope="module")
def cpu():
    mod, err = _import_first(_candidates("PADDLE_SSD_OP_CORE", ["paddle_ssd_op._core", "_core"]))
    if mod is None:
        pytest.skip("the CPU core module (_core) is not importable: " + err)
    return mod


# -- running both paths ---------------------------------------------------------------------------
def run(mod, inputs, upstream, attrs):
    loc, conf, gt_box, labels, lengths, prior_box, var = inputs
    saved = mod.forward(loc, conf, gt_box, labels, lengths, prior_box, var, **attrs)
    gl, gc = mod.backward(loc, conf, upstream, saved,
                          loc_loss_weight=attrs.get("loc_loss_weight", 1.0),
                          conf_loss_weight=attrs.get("conf_loss_weight", 1.0))
    return dict(saved, grad_location=gl, grad_confidence=gc)


def assert_close_scaled(got, want, rel, name):
    """|got - want| <= rel * (|want| + max|want|): relative to the array's scale."""
    scale = float(np.nanmax(np.abs(want))) if want.size and np.isfinite(want).any() else 0.0
    np.testing.assert_allclose(got, want, rtol=rel, atol=rel * max(scale, 1e-30), equal_nan=True,
                               err_msg=name)


def assert_agree(gpu, ref, dtype, where=""):
    dtype = np.dtype(dtype)
    rel = REL[dtype]
    for key in ("match", "target_class"):
        assert gpu[key].dtype == np.int32, (where, key, gpu[key].dtype)
        np.testing.assert_array_equal(gpu[key], ref[key], err_msg="%s: %s" % (where, key))
    for key in ("loss", "normalizer", "loc_target", "softmax_stats", "grad_location",
                "grad_confidence"):
        assert gpu[key].dtype == dtype and gpu[key].shape == ref[key].shape, (where, key)
    np.testing.assert_array_equal(gpu["normalizer"], ref["normalizer"], err_msg=where)
    np.testing.assert_array_equal(gpu["softmax_stats"][..., 0], ref["softmax_stats"][..., 0],
                                  err_msg="%s: softmax row max" % where)
    if dtype == np.float32:
        # shared exp_shifted_logit, same lanes, same combine order: the same bits
        np.testing.assert_array_equal(gpu["softmax_stats"][..., 1], ref["softmax_stats"][..., 1],
                                      err_msg="%s: softmax row sum" % where)
        np.testing.assert_array_equal(gpu["grad_confidence"], ref["grad_confidence"],
                                      err_msg="%s: grad_confidence" % where)
    else:  # std::exp: CUDA's and glibc's may differ by an ulp
        np.testing.assert_allclose(gpu["softmax_stats"], ref["softmax_stats"], rtol=rel,
                                   err_msg="%s: softmax_stats" % where)
        assert_close_scaled(gpu["grad_confidence"], ref["grad_confidence"], rel,
                            "%s: grad_confidence" % where)
    np.testing.assert_allclose(gpu["loss"], ref["loss"], rtol=rel, atol=0, equal_nan=True,
                               err_msg="%s: loss" % where)
    assert_close_scaled(gpu["loc_target"], ref["loc_target"], rel, "%s: loc_target" % where)
    assert_close_scaled(gpu["grad_location"], ref["grad_location"], rel,
                        "%s: grad_location" % where)
    # weight-0 priors get exactly zero gradient
    assert not gpu["grad_location"][gpu["match"] < 0].any(), where
    assert not gpu["grad_confidence"][gpu["target_class"] < 0].any(), where


def assert_bit_identical(a, b, where=""):
    for key in a:
        assert np.asarray(a[key]).tobytes() == np.asarray(b[key]).tobytes(), (where, key)


# -- inputs ---------------------------------------------------------------------------------------
def golden_inputs(case, dtype=None):
    dt = np.dtype(dtype or case.location.dtype)
    n_prior = case.prior_box.shape[0]
    var = case.prior_box_var if case.prior_box_var is not None else np.ones((n_prior, 4))
    inputs = (case.location.astype(dt), case.confidence.astype(dt), case.gt_box.astype(dt),
              _labels_to_int(case.gt_label), np.asarray(case.gt_lengths, np.int64),
              case.prior_box.astype(dt), np.asarray(var, dt))
    attrs = {k: case.attrs[k] for k in ATTR_KEYS if k in case.attrs}
    return inputs, case.upstream.astype(dt).reshape(-1), attrs


def tricky_batch(seed, dtype, n=6, n_prior=400, n_class=21):
    """Ties everywhere: duplicate and zero-area priors, gts equal to priors, identical logit rows
    (exactly tied cross-entropies at the mining cut), an image without gt, one with 150 gts."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 8, (n_prior, 2)) / 8.0
    size = rng.choice([0.125, 0.25, 0.5], (n_prior, 2))
    priors = np.concatenate([grid, np.minimum(grid + size, 1.0)], axis=1)
    priors[rng.integers(0, n_prior, 20)] = priors[rng.integers(0, n_prior, 20)]  # duplicates
    priors[:3, 2:] = priors[:3, :2]  # zero area
    lengths = rng.integers(1, 8, n)
    lengths[1] = 0
    lengths[-1] = 150
    n_gt = int(lengths.sum())
    gt = priors[rng.integers(0, n_prior, n_gt)].copy()  # IoU exactly 1 with some priors
    jitter = rng.random(n_gt) < 0.5
    gt[jitter] += rng.uniform(-0.05, 0.05, (int(jitter.sum()), 4))
    gt = np.clip(gt, 0, 1)
    gt[:, 2:] = np.maximum(gt[:, 2:], gt[:, :2])
    labels = rng.integers(0, n_class, n_gt).astype(np.int64)
    loc = rng.normal(0, 1, (n, n_prior, 4))
    templates = np.round(rng.normal(0, 2, (5, n_class)), 1)
    conf = templates[rng.integers(0, 5, (n, n_prior))]
    conf[::2] += rng.normal(0, 1e-3, conf[::2].shape) * (rng.random((n // 2, n_prior, 1)) < .5)
    conf[0, :5, 0] = 80.0  # shifted logits below -64: clamped
    var = rng.uniform(0.05, 2, (n_prior, 4))
    up = rng.normal(0, 1, n)
    dt = np.dtype(dtype)
    inputs = (loc.astype(dt), conf.astype(dt), gt.astype(dt), labels, lengths.astype(np.int64),
              priors.astype(dt), var.astype(dt))
    return inputs, up.astype(dt)


# -- tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", GOLDEN_FILES, ids=[p.stem for p in GOLDEN_FILES])
def test_golden_cuda_matches_cpu(path, cuda, cpu):
    case = Case(path)
    inputs, up, attrs = golden_inputs(case)
    ref = run(cpu, inputs, up, attrs)
    gpu = run(cuda, inputs, up, attrs)
    assert_agree(gpu, ref, np.float32, case.name)
    # and against the real fluid 1.8.5 output, with the golden tolerances
    case.assert_matches(gpu["loss"], gpu["grad_location"], gpu["grad_confidence"])


@pytest.mark.parametrize("path", GOLDEN_FILES[::10], ids=[p.stem for p in GOLDEN_FILES[::10]])
def test_golden_float64_cuda_matches_cpu(path, cuda, cpu):
    case = Case(path)
    inputs, up, attrs = golden_inputs(case, np.float64)
    assert_agree(run(cuda, inputs, up, attrs), run(cpu, inputs, up, attrs), np.float64, case.name)


MODES = {
    "fluid_per_prediction": dict(match_type="per_prediction"),
    "fluid_bipartite": dict(match_type="bipartite", neg_pos_ratio=2.5),
    "min_negatives": dict(min_negatives_per_image=7, neg_pos_ratio=0.5),
    "caffe_band": dict(neg_overlap_mode="caffe", neg_overlap=0.3, overlap_threshold=0.6),
    "caffe_band_bipartite": dict(match_type="bipartite", neg_overlap_mode="caffe",
                                 neg_overlap=0.0),
    "hard_example": dict(mining_type="hard_example", sample_size=64),
    "hard_example_all": dict(mining_type="hard_example", sample_size=100000),
    "norm_full": dict(normalization="full", background_label=3),
    "norm_batch_size": dict(normalization="batch_size", loc_loss_weight=0.25),
    "norm_none": dict(normalize=False, conf_loss_weight=2.0),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_modes_cuda_matches_cpu(mode, dtype, cuda, cpu):
    inputs, up = tricky_batch(7, dtype)
    attrs = dict(MODES[mode])
    assert_agree(run(cuda, inputs, up, attrs), run(cpu, inputs, up, attrs), dtype, mode)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_non_finite_inputs(dtype, cuda, cpu):
    inputs, up = tricky_batch(11, dtype, n=4, n_prior=64)
    loc, conf = inputs[0].copy(), inputs[1].copy()
    loc[0, 5, 2] = np.nan     # image 0: NaN location -> NaN loss
    conf[2, 9, 4] = np.inf    # image 2: a non-finite cross-entropy -> NaN loss
    inputs = (loc, conf) + inputs[2:]
    ref = run(cpu, inputs, up, {})
    gpu = run(cuda, inputs, up, {})
    assert np.isnan(gpu["loss"][0, 0]) and np.isnan(gpu["loss"][2, 0])
    np.testing.assert_array_equal(gpu["match"], ref["match"])
    np.testing.assert_array_equal(gpu["target_class"], ref["target_class"])
    np.testing.assert_allclose(gpu["loss"], ref["loss"], rtol=REL[np.dtype(dtype)], equal_nan=True)


@pytest.mark.parametrize("normalize", [True, False])
def test_no_positive_and_no_gt(normalize, cuda, cpu):
    rng = np.random.default_rng(3)
    n, n_prior, n_class = 3, 20, 4
    priors = np.tile(np.array([[0, 0, .1, .1]], np.float32), (n_prior, 1))
    gt = np.array([[.8, .8, .9, .9]], np.float32)  # overlaps no prior
    inputs = (rng.normal(size=(n, n_prior, 4)).astype(np.float32),
              rng.normal(size=(n, n_prior, n_class)).astype(np.float32), gt,
              np.array([1], np.int64), np.array([0, 1, 0], np.int64), priors,
              np.ones(4, np.float32))  # the shared 4-value variance
    up = np.ones(n, np.float32)
    gpu = run(cuda, inputs, up, dict(normalize=normalize))
    assert_agree(gpu, run(cpu, inputs, up, dict(normalize=normalize)), np.float32)
    assert (gpu["loss"] == 0).all() and gpu["normalizer"][0] == 1
    assert not gpu["grad_location"].any() and not gpu["grad_confidence"].any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_two_runs_bit_identical(dtype, cuda):
    inputs, up = tricky_batch(5, dtype, n=8, n_prior=1500)
    attrs = dict(match_type="per_prediction")
    assert_bit_identical(run(cuda, inputs, up, attrs), run(cuda, inputs, up, attrs), dtype)


def test_ssd300_bit_identical_and_matches_cpu(cuda, cpu):
    ssd = [p for p in GOLDEN_FILES if p.stem.startswith("ssd300")]
    if not ssd:
        pytest.skip("no ssd300 golden case")
    case = Case(ssd[0])
    inputs, up, attrs = golden_inputs(case)
    first, second = run(cuda, inputs, up, attrs), run(cuda, inputs, up, attrs)
    assert_bit_identical(first, second, case.name)
    assert_agree(first, run(cpu, inputs, up, attrs), np.float32, case.name)


def test_time_forward_backward_times_every_run(cuda):
    """The timing entry point of benchmarks/bench_gpu.py: device-resident runs, one time each."""
    inputs, _ = tricky_batch(7, "float32", n=3, n_prior=300)
    times = cuda.time_forward_backward(*inputs, runs=4, warmup=1)
    assert len(times["forward_ms"]) == len(times["forward_backward_ms"]) == 4
    assert all(0 <= f <= fb for f, fb in zip(times["forward_ms"], times["forward_backward_ms"]))
    with pytest.raises(ValueError, match="runs"):
        cuda.time_forward_backward(*inputs, runs=0)


def test_rejects_bad_input_like_cpu(cuda):
    inputs, up = tricky_batch(1, "float32", n=2, n_prior=16)
    labels = inputs[3].copy()
    labels[0] = 99
    with pytest.raises(ValueError, match="gt_label"):
        cuda.forward(*(inputs[:3] + (labels,) + inputs[4:]))
    with pytest.raises(ValueError, match="match_type"):
        cuda.forward(*inputs, match_type="nearest")


# -- gt_label / gt_lengths converted and checked on the device (the Paddle op's GPU path) --------
@pytest.mark.parametrize("label_dtype", ["int32", "int64", "float32", "float64"])
@pytest.mark.parametrize("lengths_dtype", ["int32", "int64"])
def test_device_gt_inputs_match_host_checked(label_dtype, lengths_dtype, cuda):
    inputs, up = tricky_batch(13, "float32", n=4, n_prior=96)
    labels = inputs[3].astype(label_dtype)
    if label_dtype.startswith("float"):
        labels = labels + np.asarray(0.75, label_dtype)  # truncated toward zero, as on the CPU
    lengths = inputs[4].astype(lengths_dtype)
    got = cuda.forward_device_gt(*inputs[:3], labels, lengths, *inputs[5:])
    want = cuda.forward(*inputs)
    assert_bit_identical(got, want, (label_dtype, lengths_dtype))


@pytest.mark.parametrize("bad_label", [-1, 21, np.nan, 1e30])
def test_device_bad_label_rejects_its_image_only(bad_label, cuda, cpu):
    """An image holding a label outside [0, C) gets no match and a NaN loss; the others are
    computed as if it had no gt (the op's answer when labels are on the GPU: no host check)."""
    inputs, up = tricky_batch(17, "float32", n=4, n_prior=96)
    lengths = inputs[4]
    labels = inputs[3].astype(np.float64)
    labels[lengths[:2].sum()] = bad_label  # the first gt of image 2
    got = cuda.forward_device_gt(*inputs[:3], labels, lengths, *inputs[5:])
    assert np.isnan(got["loss"][2, 0]) and (got["match"][2] == -1).all()
    assert (got["target_class"][2] == -1).all()

    # the reference: image 2 without its gts, on the CPU
    begin, end = lengths[:2].sum(), lengths[:3].sum()
    keep = np.r_[0:begin, end:len(labels)]
    without = (inputs[0], inputs[1], inputs[2][keep], inputs[3][keep],
               np.where(np.arange(4) == 2, 0, lengths), inputs[5], inputs[6])
    ref = cpu.forward(*without)
    others = [0, 1, 3]
    for key in ("match", "target_class"):
        np.testing.assert_array_equal(got[key][others], ref[key][others], err_msg=key)
    np.testing.assert_array_equal(got["normalizer"], ref["normalizer"])
    np.testing.assert_allclose(got["loss"][others], ref["loss"][others], rtol=REL[np.dtype("f4")])
    gl, gc = cuda.backward(inputs[0], inputs[1], up, got)
    assert not gl[2].any() and not gc[2].any()


@pytest.mark.parametrize("lengths", [[3, -1, 2, 0], [1, 1, 1, 0], [2, 2, 2, 2 ** 62]])
def test_device_bad_lengths_reject_every_image(lengths, cuda):
    inputs, up = tricky_batch(19, "float32", n=4, n_prior=64)
    gt_box = inputs[2][:4]
    got = cuda.forward_device_gt(inputs[0], inputs[1], gt_box, inputs[3][:4],
                                 np.asarray(lengths, np.int64), *inputs[5:])
    assert np.isnan(got["loss"]).all() and (got["match"] == -1).all()
    assert got["normalizer"][0] == 1
