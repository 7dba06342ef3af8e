"""Property tests: the fused op (dygraph and static programs) and its framework-free core against
the NumPy reference (tests/reference.py) on random inputs full of ties and edge cases.

Profiles (registered here, selected with the environment variable HYPOTHESIS_PROFILE):
  * default: a fast CI subset (a few hundred examples in all);
  * ``fuzz``: many more examples (HYPOTHESIS_PROFILE=fuzz pytest tests/test_random.py).
"""
import numpy as np
import pytest
from hypothesis import event, given

from reference import ssd_loss_reference, _labels_to_int
from runner import run_dygraph, run_static
from ssd_strategies import ssd_cases, ssd_settings

TOL = {np.dtype(np.float32): dict(rtol=2e-5, atol=1e-6),
       np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12)}


def mining_ambiguity(case, ref):
    """Per image, the priors whose mining decision is implementation-defined, as a bool [N, Np].

    Exact ties at the mining cut are decided by the shared rule (loss descending, prior index
    ascending) only if both implementations compute the tied losses bit-identically. That holds for
    priors with identical shifted-and-clamped logit rows (the generator makes many). It does not
    hold for rows that are permutations of each other, e.g. z = (-0.5, -1.5, 0) and (-0.5, 0, -1.5)
    with label 0: the losses are mathematically equal, but the order in which the exponentials are
    summed makes them differ by an ulp in one implementation and not in the other (docs/semantics.md
    §5, "ties in mining"). Such a tie group straddling the cut is flagged; the loss does not depend
    on it.
    """
    n, n_prior, _ = case.confidence.shape
    x = case.confidence
    z = np.maximum(x - x.max(axis=2, keepdims=True), x.dtype.type(-64))
    bg = case.attrs["background_label"]
    amb = np.zeros((n, n_prior), bool)
    for i in range(n):
        elig = np.nonzero(ref["match"][i] < 0)[0]
        groups = {}
        for p in elig:
            key = (z[i, p, bg], tuple(np.sort(z[i, p])))
            groups.setdefault(key, []).append(p)
        for members in groups.values():
            chosen = ref["neg_mask"][i, members]
            rows = {z[i, p].tobytes() for p in members}
            if chosen.any() and not chosen.all() and len(rows) > 1:
                amb[i, members] = True
    return amb


def assert_matches_reference(case, loss, grad_location, grad_confidence, where):
    ref = ssd_loss_reference(*case.args(), upstream=case.upstream, **case.attrs)
    tol = TOL[np.dtype(case.dtype)]
    n, n_prior, c = case.confidence.shape
    assert loss.shape == (n, 1), (where, loss.shape)
    assert loss.dtype == case.dtype, (where, loss.dtype)
    assert grad_location.shape == (n, n_prior, 4) and grad_location.dtype == case.dtype
    assert grad_confidence.shape == (n, n_prior, c) and grad_confidence.dtype == case.dtype
    amb = mining_ambiguity(case, ref)
    if amb.any():
        # the reference's negatives are one valid choice; compare the rest of those images
        event("mining tie of permuted logit rows at the cut")
        keep = ~amb[:, :, None]
        ref = dict(ref, grad_confidence=np.where(keep, ref["grad_confidence"], 0))
        grad_confidence = np.where(keep, grad_confidence, 0)
    for name, got, want in (("loss", loss, ref["loss"]),
                            ("grad_location", grad_location, ref["grad_location"]),
                            ("grad_confidence", grad_confidence, ref["grad_confidence"])):
        assert np.isfinite(got).all(), "%s: %s has non-finite values" % (where, name)
        np.testing.assert_allclose(got, want, err_msg="%s: %s" % (where, name), **tol)
    return ref


# -- the op in dygraph --------------------------------------------------------------------------
@ssd_settings(300, 6000)
@given(case=ssd_cases())
def test_dygraph_matches_reference(case):
    loss, gl, gc = run_dygraph(*case.args(), upstream=case.upstream, **case.attrs)
    assert_matches_reference(case, loss, gl, gc, "dygraph")


# -- the op in a static program (LoDTensor gt) --------------------------------------------------
@ssd_settings(40, 600)
@given(case=ssd_cases())
def test_static_matches_reference(case):
    loss, gl, gc = run_static(*case.args(), upstream=case.upstream, **case.attrs)
    assert_matches_reference(case, loss, gl, gc, "static")


# -- the framework-free core (pybind11, NumPy in/out) -------------------------------------------
def run_core(case):
    from paddle_ssd_op import _core

    dt = case.dtype
    n, n_prior, _ = case.location.shape
    var = case.prior_box_var
    if var is None:
        var = np.ones((n_prior, 4), dt)
    var = np.asarray(var, dt)
    a = case.attrs
    saved = _core.forward(case.location, case.confidence, case.gt_box,
                          _labels_to_int(case.gt_label), np.asarray(case.gt_lengths, np.int64),
                          case.prior_box, var, **a)
    up = np.ones((n, 1), dt) if case.upstream is None else case.upstream
    gl, gc = _core.backward(case.location, case.confidence, up, saved,
                            loc_loss_weight=a["loc_loss_weight"],
                            conf_loss_weight=a["conf_loss_weight"])
    return saved, gl, gc


@ssd_settings(600, 100000)
@given(case=ssd_cases())
def test_core_matches_reference(case):
    saved, gl, gc = run_core(case)
    ref = assert_matches_reference(case, saved["loss"], gl, gc, "core")
    # the saved decisions: matches, and the confidence-loss set (positives + mined negatives)
    np.testing.assert_array_equal(saved["match"], ref["match"], err_msg="core: match")
    in_conf = saved["target_class"] >= 0
    neg = in_conf & (saved["match"] < 0)
    amb = mining_ambiguity(case, ref)
    np.testing.assert_array_equal(neg.sum(axis=1), ref["neg_mask"].sum(axis=1),
                                  err_msg="core: number of mined negatives")
    np.testing.assert_array_equal(neg & ~amb, ref["neg_mask"] & ~amb,
                                  err_msg="core: mined negatives")
    np.testing.assert_array_equal(in_conf, (ref["match"] >= 0) | neg)
    z = max(ref["num_pos"], 1) if case.attrs["normalize"] else 1
    np.testing.assert_array_equal(np.asarray(saved["normalizer"]).ravel(), [z])


# -- a few hand-made tie cases that must hold in every profile ----------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("match_type, ratio",
                         [("bipartite", 0.5), ("bipartite", 1.0), ("per_prediction", 0.5)])
def test_exact_ties(dtype, match_type, ratio):
    """Duplicated priors/gts (matching ties), IoU exactly at the threshold, identical logit rows
    (mining ties at the cut): the op must follow the same tie rule as the reference."""
    priors = np.array([[0, 0, 1, 1], [0, 0, 1, .5], [0, 0, 1, .5], [0, .5, 1, 1],
                       [.25, .25, .75, .75], [.25, .25, .75, .75], [0, 0, 0, 1]], dtype)
    gt = np.array([[0, 0, 1, .5], [0, 0, 1, .5], [0, .5, 1, 1], [0, 0, 1, 1]], dtype)
    labels = np.array([[1], [2], [1], [2]], "int64")
    n_prior = len(priors)
    conf = np.tile(np.array([1, .5, 0], dtype), (2, n_prior, 1))
    loc = np.tile(np.array([.1, -.2, .3, 0], dtype), (2, n_prior, 1))
    case_args = (loc, conf, gt, labels, [3, 1], priors, [.1, .1, .2, .2])
    attrs = dict(match_type=match_type, overlap_threshold=0.5, neg_pos_ratio=ratio)
    loss, gl, gc = run_dygraph(*case_args, **attrs)
    ref = ssd_loss_reference(*case_args, **attrs)
    # the tied negatives straddle the cut: some chosen, some not
    elig = ref["match"] < 0
    assert ((ref["neg_mask"] & elig).sum(axis=1) < elig.sum(axis=1)).any()
    assert ref["neg_mask"].any()
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(loss, ref["loss"], **tol)
    np.testing.assert_allclose(gl, ref["grad_location"], **tol)
    np.testing.assert_allclose(gc, ref["grad_confidence"], **tol)


def test_float64_weight_rounding():
    # The weights are float32 attributes (as in fluid; Paddle 2.6 has no double attribute), so a
    # float64 loss is weighted by float32(w). The reference models that.
    box = np.array([[0, 0, 1, 1]], "float64")
    loc = np.array([[[0.5, 0, 0, 0]]], "float64")
    conf = np.zeros((1, 1, 2), "float64")
    args = (loc, conf, box, np.array([[1]], "int64"), [1], box, None)
    attrs = dict(loc_loss_weight=0.1, conf_loss_weight=0.0, normalize=False)
    loss, gl, _ = run_dygraph(*args, **attrs)
    ref = ssd_loss_reference(*args, **attrs)
    assert ref["loss"][0, 0] == float(np.float32(0.1)) * 0.125
    np.testing.assert_allclose(loss, ref["loss"], rtol=1e-12, atol=0)  # op: 0.012500000186...
    np.testing.assert_allclose(gl, ref["grad_location"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("make", ["unpickled", "big_endian"])
def test_core_float64_dispatch(make):
    import pickle

    from paddle_ssd_op import _core

    box = np.array([[0, 0, 1, 1]], "float64")
    conf = np.zeros((1, 1, 2))
    loc = np.full((1, 1, 4), 0.1)
    loc = pickle.loads(pickle.dumps(loc)) if make == "unpickled" else loc.astype(">f8")
    assert loc.dtype == np.float64 or loc.dtype == np.dtype(">f8")
    out = _core.forward(loc, conf, box, np.array([1]), np.array([1]), box, np.ones((1, 4)))
    assert out["loss"].dtype == np.float64
