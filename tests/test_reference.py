"""Checks the NumPy reference (tests/reference.py) against the fluid 1.8.5 golden cases and the
worked examples E1-E14 of docs/semantics.md §9."""

import numpy as np
import pytest

from cases import Case, golden_params
from reference import ssd_loss_reference


@golden_params()
def test_golden(path):
    case = Case(path)
    out = ssd_loss_reference(case.location, case.confidence, case.gt_box, case.gt_label,
                             case.gt_lengths, case.prior_box, case.prior_box_var,
                             upstream=case.upstream, **case.attrs)
    assert out['loss'].shape == case.loss.shape
    assert out['loss'].dtype == np.float32
    case.assert_matches(out['loss'], out['grad_location'], out['grad_confidence'])


# ------------------------------------------------------------------------------------------------
# Worked examples (semantics §9): real fluid 1.8.5 CPU output, 6 significant digits.
# ------------------------------------------------------------------------------------------------
ERTOL, EATOL = 1e-5, 2e-6

PRIORS = np.array([[0, 0, .5, .5], [0, 0, .5, .6], [.5, .5, 1, 1], [.25, .25, .75, .75]], np.float32)
VAR = np.tile(np.array([.1, .1, .2, .2], np.float32), (4, 1))
LOC0 = np.array([[.1, -.2, .3, 0], [0, 0, 0, 0], [.5, .5, .5, .5], [1, 2, -3, 0]], np.float32)
CONF0 = np.array([[1, 2, 0], [.5, 0, 0], [0, 1, 3], [2, 0, 1]], np.float32)


def common(**kw):
    args = dict(location=LOC0[None], confidence=CONF0[None],
                gt_box=np.array([[0, 0, .5, .5]], np.float32), gt_label=np.array([[1]], np.float32),
                gt_lengths=[1], prior_box=PRIORS, prior_box_var=VAR)
    args.update(kw)
    return ssd_loss_reference(**args)


def negs(out, i=0):
    return set(np.nonzero(out['neg_mask'][i])[0].tolist())


# name -> (kwargs, matches, negatives, loss)
EXAMPLES = {
    'E1': (dict(), [0, 0, -1, -1], {2, 3}, 3.05609),
    'E2': (dict(match_type='bipartite'), [0, -1, -1, -1], {1, 2, 3}, 4.84943),
    'E3': (dict(match_type='bipartite', neg_pos_ratio=1), [0, -1, -1, -1], {2}, 3.64745),
    'E4': (dict(background_label=2), [0, 0, -1, -1], {2, 3}, 2.05609),
    'E5': (dict(normalize=False, loc_loss_weight=2, conf_loss_weight=0.5), [0, 0, -1, -1], {2, 3}, 4.30519),
    'E6': (dict(overlap_threshold=0.9), [0, -1, -1, -1], {1, 2, 3}, 4.84943),
    'E8': (dict(gt_box=np.array([[2, 2, 3, 3]], np.float32)), [-1] * 4, set(), 0.0),  # NaN in 1.8.5
    'E9': (dict(gt_box=np.array([[2, 2, 3, 3]], np.float32), normalize=False), [-1] * 4, set(), 0.0),
    'E12': (dict(gt_label=np.array([[0]], np.float32)), [0, 0, -1, -1], {2, 3}, 3.30609),
    'E13': (dict(match_type='bipartite', neg_pos_ratio=0.5), [0, -1, -1, -1], set(), 0.477606),
    'E14': (dict(overlap_threshold=0), [0, 0, -1, 0], {2}, 7.53739),
}

GRADS = {
    'E1': ([[.05, -.1, .15, 0], [0, .416667, 0, .455804], [0, 0, 0, 0], [0, 0, 0, 0]],
           [[.122364, -.16738, .0450153], [.225931, -.362966, .137034],
            [-.478995, .0570976, .421897], [-.16738, .0450153, .122364]]),
    'E2': ([[.1, -.2, .3, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
           [[.244728, -.334759, .0900306], [-.548137, .274069, .274069],
            [-.95799, .114195, .843795], [-.334759, .0900306, .244728]]),
    'E3': (None, [[.244728, -.334759, .0900306], [0, 0, 0], [-.95799, .114195, .843795], [0, 0, 0]]),
    'E4': (None, [[.122364, -.16738, .0450153], [.225931, -.362966, .137034],
                  [.021005, .0570976, -.0781026], [.33262, .0450153, -.377636]]),
    'E5': ([[.2, -.4, .6, 0], [0, 1.66667, 0, 1.82322], [0, 0, 0, 0], [0, 0, 0, 0]], None),
    'E8': (np.zeros((4, 4)), np.zeros((4, 3))),  # NaN in 1.8.5; 0 with the clamped divisor
    'E9': (np.zeros((4, 4)), np.zeros((4, 3))),
}


@pytest.mark.parametrize('name', sorted(EXAMPLES))
def test_worked_example(name):
    kw, matches, neg, loss = EXAMPLES[name]
    out = common(**kw)
    assert out['match'][0].tolist() == matches
    assert negs(out) == neg
    np.testing.assert_allclose(out['loss'], [[loss]], rtol=ERTOL, atol=EATOL)
    gl, gc = GRADS.get(name, (None, None))
    if gl is not None:
        np.testing.assert_allclose(out['grad_location'][0], gl, rtol=ERTOL, atol=EATOL)
    if gc is not None:
        np.testing.assert_allclose(out['grad_confidence'][0], gc, rtol=ERTOL, atol=EATOL)


def test_e1_hand_check():
    out = common()
    assert out['num_pos'] == 2
    # target of prior 1 is (0, -0.833333, 0, -0.911608): d location = (loc - t) / Z in the quadratic zone
    np.testing.assert_allclose(out['grad_location'][0, 1] * 2, [0, .833333, 0, .911608], rtol=1e-5)


def test_e7_two_images():
    loc = np.stack([LOC0, LOC0[::-1]])
    conf = np.stack([CONF0, CONF0[::-1]])
    gt = np.array([[0, 0, .5, .5], [.5, .5, 1, 1], [.2, .3, .8, .7]], np.float32)
    lab = np.array([[1], [2], [1]], np.float32)
    out = ssd_loss_reference(loc, conf, gt, lab, [1, 2], PRIORS, VAR)
    assert out['match'].tolist() == [[0, 0, -1, -1], [-1, -1, 0, 1]]
    assert negs(out, 0) == {2, 3} and negs(out, 1) == {0, 1}
    assert out['num_pos'] == 4
    np.testing.assert_allclose(out['loss'], [[1.52804], [1.52680]], rtol=ERTOL, atol=EATOL)
    np.testing.assert_allclose(out['grad_location'][1],
                               [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [.025, -.05, -.152902, .25]],
                               rtol=ERTOL, atol=EATOL)


def test_e10_clamp():
    out = ssd_loss_reference(np.zeros((1, 1, 4), np.float32), np.array([[[100, 0, 0]]], np.float32),
                             np.array([[0, 0, 1, 1]], np.float32), np.array([[1]], np.float32), [1],
                             np.array([[0, 0, 1, 1]], np.float32), np.ones((1, 4), np.float32))
    assert out['match'].tolist() == [[0]]
    assert not out['neg_mask'].any()
    np.testing.assert_allclose(out['loss'], [[64]], rtol=ERTOL)
    np.testing.assert_allclose(out['grad_confidence'][0], [[1, -1, 1.60381e-28]], rtol=1e-5, atol=0)


def test_e11_inclusive_threshold():
    out = ssd_loss_reference(np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 2), np.float32),
                             np.array([[0, 0, 1, 1]], np.float32), np.array([[1]], np.float32), [1],
                             np.array([[0, 0, 1, 1], [0, 0, 1, .5]], np.float32), np.ones((2, 4), np.float32))
    assert out['match'].tolist() == [[0, 0]]
    np.testing.assert_allclose(out['loss'], [[0.875760]], rtol=ERTOL, atol=EATOL)
    np.testing.assert_allclose(out['grad_location'][0], [[0, 0, 0, 0], [0, -.25, 0, -.346574]],
                               rtol=ERTOL, atol=EATOL)
    np.testing.assert_allclose(out['grad_confidence'][0], [[.25, -.25], [.25, -.25]], rtol=ERTOL, atol=EATOL)


# ------------------------------------------------------------------------------------------------
# Deviations (semantics §11) and API details
# ------------------------------------------------------------------------------------------------
def test_variance_forms_agree():
    a = common(prior_box_var=VAR)
    b = common(prior_box_var=[.1, .1, .2, .2])
    for k in ('loss', 'grad_location', 'grad_confidence'):
        np.testing.assert_array_equal(a[k], b[k])
    c = common(prior_box_var=None)
    d = common(prior_box_var=np.ones((4, 4), np.float32))
    for k in ('loss', 'grad_location', 'grad_confidence'):
        np.testing.assert_array_equal(c[k], d[k])


def test_label_forms_agree():
    ref = common()
    for lab in (np.array([[1]], np.int32), np.array([1], np.int64), np.array([[1.7]], np.float32),
                np.array([1.2], np.float64)):
        out = common(gt_label=lab)
        np.testing.assert_array_equal(out['loss'], ref['loss'])


def test_float64_close_to_float32():
    ref = common()
    out = common(location=LOC0[None].astype(np.float64), confidence=CONF0[None].astype(np.float64),
                 prior_box=PRIORS.astype(np.float64), prior_box_var=VAR.astype(np.float64))
    assert out['loss'].dtype == np.float64
    np.testing.assert_allclose(out['loss'], ref['loss'], rtol=1e-6)
    np.testing.assert_allclose(out['grad_confidence'], ref['grad_confidence'], rtol=1e-5, atol=1e-7)


def test_empty_image_equals_zero_area_dummy():
    loc = np.stack([LOC0, LOC0[::-1]])
    conf = np.stack([CONF0, CONF0[::-1]])
    gt = np.array([[0, 0, .5, .5]], np.float32)
    lab = np.array([[1]], np.float32)
    for lens, dummy_at in (([0, 1], 0), ([1, 0], 1)):
        out = ssd_loss_reference(loc, conf, gt, lab, lens, PRIORS, VAR)
        gt2 = np.insert(gt, dummy_at, [0, 0, 0, 0], axis=0)
        lab2 = np.insert(lab, dummy_at, [1], axis=0)
        ref = ssd_loss_reference(loc, conf, gt2, lab2, [1, 1], PRIORS, VAR)
        for k in ('loss', 'grad_location', 'grad_confidence', 'match', 'neg_mask'):
            np.testing.assert_array_equal(out[k], ref[k])
        assert out['loss'][lens.index(0), 0] == 0


def test_mining_ties_by_index_and_nan_first():
    # 5 priors, one positive (prior 0), ratio 3 -> 3 negatives among priors 1..4.
    priors = np.array([[0, 0, 1, 1]] + [[2, 2, 3, 3]] * 4, np.float32)
    conf = np.zeros((1, 5, 2), np.float32)       # all background CEs tied at log 2
    out = ssd_loss_reference(np.zeros((1, 5, 4), np.float32), conf, np.array([[0, 0, 1, 1]], np.float32),
                             np.array([[1]], np.float32), [1], priors, None)
    assert negs(out) == {1, 2, 3}
    conf[0, 4, 1] = np.nan                        # NaN loss ranks first
    out = ssd_loss_reference(np.zeros((1, 5, 4), np.float32), conf, np.array([[0, 0, 1, 1]], np.float32),
                             np.array([[1]], np.float32), [1], priors, None)
    assert negs(out) == {1, 2, 4}


def test_greedy_tie_order():
    # two identical priors and two identical gts: prior 0 <- gt 0, prior 1 <- gt 1
    priors = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.float32)
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.float32)
    out = ssd_loss_reference(np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 3), np.float32), gt,
                             np.array([[1], [2]], np.int32), [2], priors, match_type='bipartite')
    assert out['match'].tolist() == [[0, 1]]
