"""Hypothesis strategies for random ssd_loss inputs (shared by test_random.py and test_gradcheck.py).

Structural choices (sizes, dtypes, modes, attributes) are drawn by Hypothesis so that a failure
shrinks to a small, readable case; the array values come from a NumPy generator seeded by a drawn
integer, which keeps generation fast and deterministic under ``derandomize=True``.

The generated inputs deliberately contain:
  * exact IoU ties: gt boxes that copy a prior or another gt, duplicated priors, boxes on a coarse
    grid (mirror-symmetric overlaps);
  * IoU exactly at the per_prediction threshold (the threshold is drawn from the IoU values);
  * zero-area gt boxes and priors, images without gt;
  * exact mining-loss ties: quantized logits and logit rows copied from a small pool of templates;
  * saturated cross-entropies (logit spread > 64, the -64 clamp).
"""
import numpy as np
from hypothesis import strategies as st

from reference import iou

FLOAT_DTYPES = ("float32", "float64")
LABEL_DTYPES = ("int32", "int64", "float32", "float64")
MATCH_TYPES = ("bipartite", "per_prediction")


class SSDCase:
    """One set of inputs and attributes; ``args()``/``attrs`` feed both the op and the reference."""

    def __init__(self, location, confidence, gt_box, gt_label, gt_lengths, prior_box, prior_box_var,
                 upstream, attrs, notes):
        self.location = location
        self.confidence = confidence
        self.gt_box = gt_box
        self.gt_label = gt_label
        self.gt_lengths = gt_lengths
        self.prior_box = prior_box
        self.prior_box_var = prior_box_var
        self.upstream = upstream
        self.attrs = attrs
        self.notes = notes

    @property
    def dtype(self):
        return self.location.dtype

    def args(self):
        return (self.location, self.confidence, self.gt_box, self.gt_label, self.gt_lengths,
                self.prior_box, self.prior_box_var)

    def __repr__(self):
        with np.printoptions(precision=9, threshold=100000, linewidth=140):
            parts = ["SSDCase(%s)" % self.notes, "attrs=%r" % (self.attrs,)]
            for k in ("gt_lengths", "gt_box", "gt_label", "prior_box", "prior_box_var", "location",
                      "confidence", "upstream"):
                v = getattr(self, k)
                parts.append("%s=%s" % (k, repr(v)))
            return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# box generators (NumPy, seeded)
# --------------------------------------------------------------------------------------------
def _random_box(rng):
    x = np.sort(rng.uniform(0, 1, 2))
    y = np.sort(rng.uniform(0, 1, 2))
    return np.array([x[0], y[0], x[1], y[1]])


def _grid_box(rng, steps=8):
    x = np.sort(rng.choice(steps + 1, 2, replace=False)) / steps
    y = np.sort(rng.choice(steps + 1, 2, replace=False)) / steps
    return np.array([x[0], y[0], x[1], y[1]])


def _zero_area_box(rng):
    b = _random_box(rng)
    if rng.random() < 0.5:
        b[2] = b[0]
    else:
        b[3] = b[1]
    return b


def _priors(rng, n_prior, kind, dtype):
    out = np.empty((n_prior, 4))
    for p in range(n_prior):
        r = rng.random()
        if kind == "grid" or (kind == "mixed" and r < 0.3):
            out[p] = _grid_box(rng)
        elif kind == "mixed" and r < 0.4 and p > 0:
            out[p] = out[rng.integers(p)]  # duplicated prior: identical IoU columns
        elif kind == "mixed" and r < 0.45:
            out[p] = _zero_area_box(rng)
        else:
            out[p] = _random_box(rng)
    return out.astype(dtype)


def _gts(rng, n_gt, priors, kind, dtype):
    out = np.empty((n_gt, 4))
    for g in range(n_gt):
        r = rng.random()
        if kind == "copies" or (kind == "mixed" and r < 0.35):
            out[g] = priors[rng.integers(len(priors))]  # exact copy of a prior (IoU ties, IoU 1)
        elif kind == "mixed" and r < 0.45 and g > 0:
            out[g] = out[rng.integers(g)]  # duplicated gt: identical IoU rows
        elif kind == "mixed" and r < 0.55:
            out[g] = _zero_area_box(rng)
        elif kind == "mixed" and r < 0.7:
            out[g] = _grid_box(rng)
        elif kind == "mixed" and r < 0.8:
            p = priors[rng.integers(len(priors))].astype(np.float64)
            out[g] = np.clip(p + rng.normal(0, 0.03, 4), 0, 1)
            out[g, 2:] = np.maximum(out[g, 2:], out[g, :2])
        else:
            out[g] = _random_box(rng)
    return out.astype(dtype)


# --------------------------------------------------------------------------------------------
# logits
# --------------------------------------------------------------------------------------------
def _logits(rng, shape, mode, dtype):
    n, n_prior, c = shape
    if mode == "continuous":
        x = rng.normal(0, rng.choice([0.3, 1.0, 3.0]), shape)
    elif mode == "quantized":
        x = rng.integers(-6, 7, shape) * 0.5
    elif mode == "templates":
        # rows copied from a small pool: exact ties between priors of the same target class
        pool = rng.integers(-6, 7, (int(rng.integers(1, 4)), c)) * 0.5
        x = pool[rng.integers(len(pool), size=(n, n_prior))]
    elif mode == "saturated":
        x = rng.normal(0, 1.0, shape)
        hot = rng.random((n, n_prior)) < 0.4
        x[hot, rng.integers(c)] += rng.choice([-100.0, 80.0, 150.0])
    else:
        raise ValueError(mode)
    return x.astype(dtype)


# --------------------------------------------------------------------------------------------
# the strategy
# --------------------------------------------------------------------------------------------
@st.composite
def ssd_cases(draw, max_n=4, max_np=40, max_c=10, max_gt=6, dtypes=FLOAT_DTYPES,
              logit_modes=("continuous", "quantized", "templates", "saturated"),
              label_dtypes=LABEL_DTYPES, upstream=True):
    dtype = draw(st.sampled_from(dtypes))
    n = draw(st.integers(1, max_n))
    n_prior = draw(st.integers(1, max_np))
    c = draw(st.integers(1, max_c))
    background = draw(st.integers(0, c - 1))
    lengths = draw(st.lists(st.integers(0, max_gt), min_size=n, max_size=n))
    prior_kind = draw(st.sampled_from(("random", "grid", "mixed")))
    gt_kind = draw(st.sampled_from(("random", "copies", "mixed")))
    logit_mode = draw(st.sampled_from(logit_modes))
    loc_scale = draw(st.sampled_from((0.1, 0.5, 1.0, 3.0)))
    var_kind = draw(st.sampled_from(("none", "list", "array")))
    label_dtype = draw(st.sampled_from(label_dtypes))
    label_rank = draw(st.sampled_from((1, 2)))
    match_type = draw(st.sampled_from(MATCH_TYPES))
    thr_kind = draw(st.sampled_from(("random", "special", "from_iou")))
    thr = draw(st.floats(0.0, 1.0)) if thr_kind == "random" else \
        draw(st.sampled_from((0.0, 1e-6, 0.5, 1.0)))
    # width=32: the attribute is a float32, which must stay > 0 (5e-324 would be 0 there)
    ratio = draw(st.one_of(st.sampled_from((0.5, 1.0, 3.0, 3.7, 5.0)),
                           st.floats(0.0, 5.0, exclude_min=True, width=32)))
    normalize = draw(st.booleans())
    weights = draw(st.one_of(st.just((1.0, 1.0)),
                             st.tuples(st.floats(0.0, 3.0), st.floats(0.0, 3.0))))
    up_kind = draw(st.sampled_from(("none", "random"))) if upstream else "none"
    seed = draw(st.integers(0, 2**32 - 1))

    rng = np.random.default_rng(seed)
    ng = int(sum(lengths))
    priors = _priors(rng, n_prior, prior_kind, dtype)
    gt_box = _gts(rng, ng, priors, gt_kind, dtype).reshape(ng, 4)

    labels = rng.integers(0, c, ng)
    if label_dtype.startswith("float"):
        frac = rng.uniform(0, 0.9, ng)
        # class 0 may also be written as -0.x (truncation toward zero gives 0)
        neg = (labels == 0) & (rng.random(ng) < 0.5)
        gt_label = np.where(neg, -frac, labels + frac).astype(label_dtype)
    else:
        gt_label = labels.astype(label_dtype)
    if label_rank == 2:
        gt_label = gt_label.reshape(ng, 1)

    if var_kind == "none":
        var = None
    elif var_kind == "list":
        var = [float(v) for v in rng.choice([0.1, 0.2, 0.5, 1.0, 1.7], 4)]
    else:
        var = rng.uniform(0.05, 2.0, (n_prior, 4)).astype(dtype)

    if thr_kind == "from_iou" and ng:
        ious = iou(gt_box, priors).ravel()
        ious = ious[ious >= 1e-6]
        if ious.size:
            # IoU exactly at the threshold (exact in float32; the attribute is a C float)
            thr = float(np.float32(ious[rng.integers(ious.size)]))
            thr = min(max(thr, 0.0), 1.0)

    location = (rng.normal(0, 1, (n, n_prior, 4)) * loc_scale).astype(dtype)
    confidence = _logits(rng, (n, n_prior, c), logit_mode, dtype)
    up = None if up_kind == "none" else rng.normal(0, 1, (n, 1)).astype(dtype)

    attrs = dict(background_label=background, overlap_threshold=thr, neg_pos_ratio=float(ratio),
                 loc_loss_weight=float(weights[0]), conf_loss_weight=float(weights[1]),
                 match_type=match_type, normalize=normalize)
    notes = ("dtype=%s N=%d Np=%d C=%d lengths=%s priors=%s gts=%s logits=%s var=%s labels=%s/%dD "
             "seed=%d" % (dtype, n, n_prior, c, lengths, prior_kind, gt_kind, logit_mode, var_kind,
                          label_dtype, label_rank, seed))
    return SSDCase(location, confidence, gt_box, gt_label, np.asarray(lengths, np.int64), priors,
                   var, up, attrs, notes)


# --------------------------------------------------------------------------------------------
# Hypothesis profiles: the default one is a fast, deterministic CI subset; HYPOTHESIS_PROFILE=fuzz
# runs many more examples and explores new ones on every run (derandomize off; a failure prints a
# @reproduce_failure blob and is kept in the local example database).
# --------------------------------------------------------------------------------------------
import os  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

_BASE = dict(deadline=None, print_blob=True,
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                    HealthCheck.filter_too_much])
settings.register_profile("ssd-ci", derandomize=True, **_BASE)
settings.register_profile("fuzz", derandomize=False, **_BASE)
FUZZ = os.environ.get("HYPOTHESIS_PROFILE", "") == "fuzz"
PROFILE = "fuzz" if FUZZ else "ssd-ci"


def ssd_settings(ci, fuzz):
    """Settings of one test: ``ci`` examples by default, ``fuzz`` under HYPOTHESIS_PROFILE=fuzz."""
    return settings(settings.get_profile(PROFILE), max_examples=fuzz if FUZZ else ci)
