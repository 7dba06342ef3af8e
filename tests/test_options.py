"""The options beyond the fluid 1.8.5 layer against the NumPy reference (tests/reference.py), in
dygraph and in static programs:

  * mining_type='hard_example' (with sample_size), also on the 150 golden cases computed by fluid's
    own mine_hard_examples operator (tests/data/golden_hard_example);
  * normalization, min_negatives_per_image, neg_overlap_mode;
  * return_targets (match_indices, target_class, negative_mask, num_positives);
  * the default call equals the explicit defaults bit for bit;
  * the worked examples of docs/options.md (executed as doctests, so the docs cannot drift).

Random inputs here use continuous logits: exact mining-loss ties (whose order may depend on the
summation order, see test_random.mining_ambiguity) do not occur.
"""
import doctest
from pathlib import Path

import numpy as np
import paddle
import pytest
from hypothesis import given, strategies as st

import paddle_ssd_op
from cases import ATOL, DATA, RTOL, Case
from reference import iou, ssd_loss_reference
from runner import RUNNERS
from ssd_strategies import ssd_cases, ssd_settings

HARD_FILES = sorted((DATA / "golden_hard_example").glob("*.npz"))
DOC = Path(__file__).resolve().parent.parent / "docs" / "options.md"
TOL = {np.dtype(np.float32): dict(rtol=RTOL, atol=ATOL),
       np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12)}
MODES = sorted(RUNNERS)


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------
class Inputs:
    """Small random inputs: priors, gts near some priors (IoUs over the whole range), images
    without gt, continuous logits."""

    def __init__(self, seed, dtype="float32", n=3, n_prior=12, c=4, max_gt=3):
        rng = np.random.default_rng(seed)
        # half of the priors are shifted copies of the other half: unmatched priors overlapping a
        # gt by any IoU (bipartite leftovers, the neg_overlap band)
        n_base = (n_prior + 1) // 2
        lo = rng.uniform(0, 0.7, (n_base, 2))
        base = np.concatenate([lo, lo + rng.uniform(0.1, 0.3, (n_base, 2))], axis=1)
        copies = base[rng.integers(n_base, size=n_prior - n_base)]
        copies = copies + rng.normal(0, 1, (len(copies), 1)) * rng.normal(0, 0.04, copies.shape)
        priors = np.concatenate([base, copies])
        priors[:, 2:] = np.maximum(priors[:, 2:], priors[:, :2] + 0.02)
        lengths = rng.integers(1, max_gt + 1, n)
        lengths[rng.integers(n)] = 0  # one image without gt
        ng = int(lengths.sum())
        gt = base[rng.integers(n_base, size=ng)] + rng.normal(0, 0.02, (ng, 4))
        gt[:, 2:] = np.maximum(gt[:, 2:], gt[:, :2] + 0.02)
        self.location = rng.normal(0, 0.5, (n, n_prior, 4)).astype(dtype)
        self.confidence = rng.normal(0, 2.0, (n, n_prior, c)).astype(dtype)
        self.gt_box = gt.astype(dtype)
        self.gt_label = rng.integers(1, c, (ng, 1)).astype("int32")
        self.gt_lengths = lengths.astype(np.int64)
        self.prior_box = priors.astype(dtype)
        self.prior_box_var = np.tile(np.array([.1, .1, .2, .2], dtype), (n_prior, 1))
        self.upstream = rng.normal(0, 1, (n, 1)).astype(dtype)

    @property
    def dtype(self):
        return self.location.dtype

    def args(self):
        return (self.location, self.confidence, self.gt_box, self.gt_label, self.gt_lengths,
                self.prior_box, self.prior_box_var)


def assert_close(got, ref, dtype, where):
    loss, grad_location, grad_confidence = got
    tol = TOL[np.dtype(dtype)]
    assert loss.shape == ref["loss"].shape and loss.dtype == dtype, where
    for name, g, w in (("loss", loss, ref["loss"]), ("grad_location", grad_location,
                       ref["grad_location"]), ("grad_confidence", grad_confidence,
                                               ref["grad_confidence"])):
        np.testing.assert_allclose(g, w, err_msg="%s: %s" % (where, name), **tol)


# ------------------------------------------------------------------------------------------------
# the golden hard_example cases (fluid 1.8.5's mine_hard_examples in hard_example mode)
# ------------------------------------------------------------------------------------------------
def _hard_case(path):
    case = Case(path)
    ref = ssd_loss_reference(case.location, case.confidence, case.gt_box, case.gt_label,
                             case.gt_lengths, case.prior_box, case.prior_box_var,
                             upstream=case.upstream, **case.attrs)
    if not np.isfinite(case.loss).all():
        # No positive survived the mining in the whole batch: fluid divides by 0 (inf, or NaN for a
        # zero sum); with the clamped divisor the rows are the unnormalized sums.
        assert ref["num_pos"] == 0
        np.testing.assert_array_equal(np.isinf(case.loss), ref["loss"] != 0)
        np.testing.assert_array_equal(np.isnan(case.loss), ref["loss"] == 0)
    return case, ref


hard_params = pytest.mark.parametrize("path", HARD_FILES, ids=[p.stem for p in HARD_FILES])


def test_hard_example_golden_files():
    assert len(HARD_FILES) == 150
    non_finite = [p.stem for p in HARD_FILES if not np.isfinite(np.load(p)["loss"]).all()]
    assert len(non_finite) == 11


@hard_params
def test_reference_hard_example_golden(path):
    case, ref = _hard_case(path)
    assert case.attrs["mining_type"] == "hard_example"
    if np.isfinite(case.loss).all():
        case.assert_matches(ref["loss"], ref["grad_location"], ref["grad_confidence"])


@pytest.mark.parametrize("mode", MODES)
@hard_params
def test_op_hard_example_golden(path, mode):
    case, ref = _hard_case(path)
    got = RUNNERS[mode](case.location, case.confidence, case.gt_box, case.gt_label,
                        case.gt_lengths, case.prior_box, case.prior_box_var,
                        upstream=case.upstream, **case.attrs)
    if np.isfinite(case.loss).all():
        case.assert_matches(*got)
    else:
        assert_close(got, ref, np.float32, "%s %s (non-finite in fluid)" % (mode, path.stem))


# ------------------------------------------------------------------------------------------------
# each option on small random inputs, dygraph and static
# ------------------------------------------------------------------------------------------------
SEEDS = (0, 1, 2)
OPTIONS = {
    "hard_1": dict(mining_type="hard_example", sample_size=1),
    "hard_4_bipartite": dict(mining_type="hard_example", sample_size=4, match_type="bipartite"),
    "hard_7_unnormalized": dict(mining_type="hard_example", sample_size=7, normalize=False),
    "hard_all": dict(mining_type="hard_example", sample_size=20),
    "norm_valid": dict(normalization="valid"),
    "norm_full": dict(normalization="full"),
    "norm_batch_size": dict(normalization="batch_size"),
    "norm_none": dict(normalization="none"),
    "norm_overrides_normalize": dict(normalize=False, normalization="full"),
    "min_neg_2": dict(min_negatives_per_image=2, neg_pos_ratio=0.5),
    "min_neg_30": dict(min_negatives_per_image=30),
    "caffe_bipartite": dict(neg_overlap_mode="caffe", match_type="bipartite"),
    "caffe_band_0.2": dict(neg_overlap_mode="caffe", neg_overlap=0.2, neg_pos_ratio=5.0),
    "caffe_min_neg": dict(neg_overlap_mode="caffe", neg_overlap=0.3, min_negatives_per_image=4,
                          normalization="batch_size"),
}


def _dtype(seed):
    return "float64" if seed == 2 else "float32"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_option_matches_reference(name, mode):
    attrs = OPTIONS[name]
    for seed in SEEDS:
        x = Inputs(seed, _dtype(seed))
        ref = ssd_loss_reference(*x.args(), upstream=x.upstream, **attrs)
        got = RUNNERS[mode](*x.args(), upstream=x.upstream, **attrs)
        assert_close(got, ref, x.dtype, "%s seed %d" % (mode, seed))


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_option_is_not_vacuous(name):
    """On these seeds every option changes the reference's result compared with the defaults."""
    attrs = OPTIONS[name]
    base = {k: v for k, v in attrs.items() if k in ("match_type", "normalize", "neg_pos_ratio")}
    changed = []
    for seed in SEEDS:
        x = Inputs(seed, _dtype(seed))
        a = ssd_loss_reference(*x.args(), **attrs)
        b = ssd_loss_reference(*x.args(), **base)
        changed.append(not np.array_equal(a["loss"], b["loss"]))
    if name == "norm_valid":  # the default itself
        assert not any(changed)
    else:
        assert any(changed)


def test_reference_option_semantics():
    """Direct checks of the reference's option rules on the random inputs."""
    for seed in SEEDS:
        x = Inputs(seed)
        n, n_prior = x.location.shape[:2]
        offsets = np.concatenate([[0], np.cumsum(x.gt_lengths)])
        base = ssd_loss_reference(*x.args())
        # hard_example: exactly min(sample_size, Np) priors kept per image, positives only demoted
        for s in (1, 5, 30):
            h = ssd_loss_reference(*x.args(), mining_type="hard_example", sample_size=s)
            kept = (h["match"] >= 0) | h["neg_mask"]
            assert (kept.sum(axis=1) == min(s, n_prior)).all()
            assert ((h["match"] == base["match"]) | (h["match"] == -1)).all()
            assert h["num_pos"] == int((h["match"] >= 0).sum())
            assert h["normalizer"] == max(h["num_pos"], 1)
        # normalization: the same sums, other divisors
        for norm, z in (("full", n * n_prior), ("batch_size", n), ("none", 1)):
            o = ssd_loss_reference(*x.args(), normalization=norm)
            assert o["normalizer"] == z
            np.testing.assert_allclose(o["loss"] * z, base["loss"] * base["normalizer"], rtol=1e-6)
        # min_negatives_per_image: images without gt get that many negatives
        o = ssd_loss_reference(*x.args(), min_negatives_per_image=3)
        for i in range(n):
            k = int(base["neg_mask"][i].sum())
            assert o["neg_mask"][i].sum() == max(k, min(3, int((base["match"][i] < 0).sum())))
        # caffe: no negative overlaps a gt of its image by >= neg_overlap
        o = ssd_loss_reference(*x.args(), neg_overlap_mode="caffe", neg_overlap=0.2,
                               min_negatives_per_image=n_prior)
        for i in range(n):
            gts = x.gt_box[offsets[i]:offsets[i + 1]]
            if len(gts):
                best = iou(gts, x.prior_box).max(axis=0)
                assert not (o["neg_mask"][i] & (best >= np.float32(0.2))).any()
                assert (o["neg_mask"][i] == ((o["match"][i] < 0) & (best < np.float32(0.2)))).all()
            else:
                assert o["neg_mask"][i].all()


# ------------------------------------------------------------------------------------------------
# return_targets
# ------------------------------------------------------------------------------------------------
TARGET_KEYS = ("match_indices", "target_class", "negative_mask", "num_positives")


def targets_dygraph(x, **attrs):
    loss, t = paddle_ssd_op.ssd_loss(
        paddle.to_tensor(x.location), paddle.to_tensor(x.confidence), paddle.to_tensor(x.gt_box),
        paddle.to_tensor(x.gt_label), paddle.to_tensor(x.prior_box),
        paddle.to_tensor(x.prior_box_var), gt_lengths=[int(v) for v in x.gt_lengths],
        return_targets=True, **attrs)
    assert sorted(t) == sorted(TARGET_KEYS)
    return loss.numpy(), {k: t[k].numpy() for k in TARGET_KEYS}


def targets_static(x, **attrs):
    """A static program fed with LoDTensors (as runner.run_static) fetching the targets."""
    dtype = str(x.dtype)
    main, startup = paddle.static.Program(), paddle.static.Program()
    paddle.enable_static()
    try:
        with paddle.static.program_guard(main, startup):
            loc = paddle.static.data("location", list(x.location.shape), dtype)
            conf = paddle.static.data("confidence", list(x.confidence.shape), dtype)
            box = paddle.static.data("gt_box", [-1, 4], dtype, lod_level=1)
            label = paddle.static.data("gt_label", [-1, 1], "int32", lod_level=1)
            prior = paddle.static.data("prior_box", list(x.prior_box.shape), dtype)
            var = paddle.static.data("prior_box_var", list(x.prior_box_var.shape), dtype)
            loss, t = paddle_ssd_op.ssd_loss(loc, conf, box, label, prior, var,
                                             return_targets=True, **attrs)
            assert sorted(t) == sorted(TARGET_KEYS)
        place = paddle.CPUPlace()
        lod = [[int(v) for v in x.gt_lengths]]
        feed = {"location": x.location, "confidence": x.confidence, "prior_box": x.prior_box,
                "prior_box_var": x.prior_box_var,
                "gt_box": paddle.base.create_lod_tensor(x.gt_box, lod, place),
                "gt_label": paddle.base.create_lod_tensor(x.gt_label, lod, place)}
        exe = paddle.static.Executor(place)
        exe.run(startup)
        out = exe.run(main, feed=feed, fetch_list=[loss] + [t[k] for k in TARGET_KEYS])
    finally:
        paddle.disable_static()
    out = [np.asarray(o) for o in out]
    return out[0], dict(zip(TARGET_KEYS, out[1:]))


TARGET_RUNNERS = {"dygraph": targets_dygraph, "static": targets_static}
TARGET_OPTIONS = {
    "default": dict(),
    "bipartite": dict(match_type="bipartite"),
    "hard_3": dict(mining_type="hard_example", sample_size=3),
    "hard_9_bipartite": dict(mining_type="hard_example", sample_size=9, match_type="bipartite"),
    "min_neg_caffe": dict(min_negatives_per_image=2, neg_overlap_mode="caffe", neg_overlap=0.25,
                          normalization="none"),
}


def assert_targets(loss, t, ref, dtype, where):
    n, n_prior = ref["match"].shape
    np.testing.assert_allclose(loss, ref["loss"], err_msg=where, **TOL[np.dtype(dtype)])
    assert t["match_indices"].dtype == np.int32 and t["match_indices"].shape == (n, n_prior)
    assert t["target_class"].dtype == np.int32 and t["target_class"].shape == (n, n_prior)
    assert t["negative_mask"].dtype == np.bool_ and t["negative_mask"].shape == (n, n_prior)
    assert t["num_positives"].dtype == np.int64 and t["num_positives"].size == 1
    np.testing.assert_array_equal(t["match_indices"], ref["match"], err_msg=where)
    np.testing.assert_array_equal(t["target_class"], ref["target_class"], err_msg=where)
    np.testing.assert_array_equal(t["negative_mask"], ref["neg_mask"], err_msg=where)
    assert int(t["num_positives"].reshape(())) == ref["num_pos"], where


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(TARGET_OPTIONS))
def test_return_targets(name, mode):
    attrs = TARGET_OPTIONS[name]
    for seed in SEEDS[:2]:
        x = Inputs(seed, _dtype(seed))
        ref = ssd_loss_reference(*x.args(), **attrs)
        loss, t = TARGET_RUNNERS[mode](x, **attrs)
        assert_targets(loss, t, ref, x.dtype, "%s %s seed %d" % (mode, name, seed))
        # the loss alone is the same with and without return_targets
        plain = RUNNERS[mode](*x.args(), **attrs)[0]
        np.testing.assert_array_equal(plain, loss)


def test_return_targets_consistency():
    """Relations between the targets (dygraph): positives have their gt's class, negatives the
    background class, everything else -1."""
    x = Inputs(5, n=4, n_prior=20)
    for attrs in TARGET_OPTIONS.values():
        _, t = targets_dygraph(x, background_label=0, **attrs)
        pos = t["match_indices"] >= 0
        assert t["num_positives"] == pos.sum()
        assert (t["target_class"][pos] >= 1).all()
        assert (t["target_class"][t["negative_mask"]] == 0).all()
        assert (t["target_class"][~pos & ~t["negative_mask"]] == -1).all()


# ------------------------------------------------------------------------------------------------
# defaults
# ------------------------------------------------------------------------------------------------
EXPLICIT = dict(normalization="valid", min_negatives_per_image=0, neg_overlap_mode="fluid")
GOLDEN_FILES = sorted((DATA / "golden").glob("*.npz"))


@pytest.mark.parametrize("mode", MODES)
def test_default_equals_explicit_defaults(mode):
    run = RUNNERS[mode]
    cases = [Case(p) for p in GOLDEN_FILES[::max(1, len(GOLDEN_FILES) // 4)][:4]]
    for case in cases:
        args = (case.location, case.confidence, case.gt_box, case.gt_label, case.gt_lengths,
                case.prior_box, case.prior_box_var)
        attrs = dict(case.attrs)
        normalize = attrs.pop("normalize", True)
        a = run(*args, upstream=case.upstream, normalize=normalize, **attrs)
        explicit = dict(EXPLICIT, normalization="valid" if normalize else "none")
        b = run(*args, upstream=case.upstream, **attrs, **explicit)
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v, err_msg=case.name)
    x = Inputs(7)
    for normalize, normalization in ((True, "valid"), (False, "none")):
        a = run(*x.args(), upstream=x.upstream, normalize=normalize)
        b = run(*x.args(), upstream=x.upstream, **dict(EXPLICIT, normalization=normalization))
        c = run(*x.args(), upstream=x.upstream, normalize=not normalize,
                **dict(EXPLICIT, normalization=normalization))  # normalization wins
        for u, v, w in zip(a, b, c):
            np.testing.assert_array_equal(u, v)
            np.testing.assert_array_equal(u, w)


# ------------------------------------------------------------------------------------------------
# options mixed (Hypothesis)
# ------------------------------------------------------------------------------------------------
@st.composite
def option_cases(draw):
    case = draw(ssd_cases(max_n=3, max_np=24, max_c=6, max_gt=4, logit_modes=("continuous",)))
    n_prior = case.confidence.shape[1]
    if draw(st.booleans()):
        case.attrs.update(mining_type="hard_example",
                          sample_size=draw(st.integers(1, n_prior + 2)))
    else:
        case.attrs.update(min_negatives_per_image=draw(st.integers(0, n_prior + 1)),
                          neg_overlap_mode=draw(st.sampled_from(("fluid", "caffe"))),
                          neg_overlap=draw(st.sampled_from((0.05, 0.3, 0.5, 0.9))))
    case.attrs["normalization"] = draw(st.sampled_from((None, "valid", "full", "batch_size",
                                                        "none")))
    return case


@ssd_settings(40, 2000)
@given(case=option_cases())
def test_mixed_options_dygraph(case):
    ref = ssd_loss_reference(*case.args(), upstream=case.upstream, **case.attrs)
    got = RUNNERS["dygraph"](*case.args(), upstream=case.upstream, **case.attrs)
    assert_close(got, ref, case.dtype, "dygraph")


@ssd_settings(8, 300)
@given(case=option_cases())
def test_mixed_options_static(case):
    ref = ssd_loss_reference(*case.args(), upstream=case.upstream, **case.attrs)
    got = RUNNERS["static"](*case.args(), upstream=case.upstream, **case.attrs)
    assert_close(got, ref, case.dtype, "static")


# ------------------------------------------------------------------------------------------------
# docs/options.md: its examples are doctests, run against the installed op
# ------------------------------------------------------------------------------------------------
def test_docs_options_examples():
    result = doctest.testfile(str(DOC), module_relative=False, verbose=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 20
    assert result.failed == 0
