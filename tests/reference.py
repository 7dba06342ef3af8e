"""Pure-NumPy reference implementation of the SSD multibox loss (fluid 1.8.5 ``ssd_loss``).

Written from ``docs/semantics.md`` (§3, §4, §5 and the decided deviations of §11).
It is deliberately plain: one image at a time, vectorised over priors where that is easy.

Arithmetic is done in the input float dtype (float32 or float64): ``location`` and ``confidence``
fix it, and the boxes, variances and upstream weights are cast to it. Scalar attributes are
float32 in the original op (attributes are C ``float``), so the per_prediction threshold and the
negative/positive ratio are rounded to float32 before use.

Deliberate deviations from the 1.8.5 original (docs/semantics.md §11):
  * normalize=True with zero positives in the batch: divisor clamped at 1 -> loss 0, grads 0.
  * images with 0 gt boxes are allowed (no positives, no mined negatives).
  * prior_box_var=None means unit variances; a list of 4 floats or an [Np, 4] array also works.
  * float64 inputs and int32/int64/float labels (shape [Ng, 1] or [Ng]) are supported.
  * every image uses the same greedy matching rule (no separate path for >= 130 gts).
  * mining ties: loss descending, then prior index ascending; NaN losses rank first.

Options beyond the 1.8.5 layer (keyword arguments; the defaults reproduce the layer):
  * mining_type='hard_example' with sample_size: fluid's mine_hard_examples operator in that mode,
    as the layer composes it (no LocLoss input). All priors are ranked by the mining
    cross-entropy, the top min(sample_size, Np) are kept; kept unmatched priors become negatives,
    matched priors that are not kept lose their match.
  * normalization: 'valid' (positives in the batch, at least 1), 'full' (N*Np), 'batch_size' (N),
    'none'; None takes it from normalize ('valid' if True else 'none').
  * min_negatives_per_image (max_negative): K_i = max(K_i, min(min_negatives_per_image, #cand)).
  * neg_overlap_mode='caffe' (max_negative): unmatched priors whose best IoU with a gt of the image
    (IoUs below 1e-6 count as 0) is >= neg_overlap are not negative candidates.
"""

import numpy as np

MATCH_TYPES = ("bipartite", "per_prediction")
MINING_TYPES = ("max_negative", "hard_example")
NORMALIZATIONS = ("valid", "full", "batch_size", "none")
NEG_OVERLAP_MODES = ("fluid", "caffe")


# --------------------------------------------------------------------------------------------
# IoU (semantics §3.1)
# --------------------------------------------------------------------------------------------
def iou(gt, priors):
    """IoU matrix [n_gt, Np] for corner boxes (normalized coordinates, no +1).

    Evaluated as inter / (((area_a + area_b) - inter) + 1e-10) in the array dtype.
    """
    dt = priors.dtype
    gt = gt[:, None, :]
    pr = priors[None, :, :]
    area_a = (gt[..., 3] - gt[..., 1]) * (gt[..., 2] - gt[..., 0])
    area_b = (pr[..., 3] - pr[..., 1]) * (pr[..., 2] - pr[..., 0])
    iw = np.maximum(np.minimum(gt[..., 2], pr[..., 2]) - np.maximum(gt[..., 0], pr[..., 0]), dt.type(0))
    ih = np.maximum(np.minimum(gt[..., 3], pr[..., 3]) - np.maximum(gt[..., 1], pr[..., 1]), dt.type(0))
    inter = iw * ih
    union = ((area_a + area_b) - inter) + dt.type(1e-10)
    return (inter / union).astype(dt, copy=False)


# --------------------------------------------------------------------------------------------
# Matching (semantics §3.2)
# --------------------------------------------------------------------------------------------
def match_image(iou_gp, match_type, overlap_threshold):
    """Match the priors of one image.

    iou_gp: [n_gt, Np] IoU matrix. Returns m [Np] int64 (-1 = unmatched, else local gt index).
    """
    dt = iou_gp.dtype
    eps = dt.type(1e-6)
    n_gt, n_prior = iou_gp.shape
    m = np.full(n_prior, -1, dtype=np.int64)
    if n_gt == 0 or n_prior == 0:
        return m

    # Stage A: greedy bipartite step. Prior-major layout [Np, n_gt], so that np.argmax over the
    # flattened array (first occurrence of the maximum) picks the lowest prior, then lowest gt.
    # `~(x >= eps)` also drops NaN IoUs, which never win a strict '>' comparison in the original.
    work = iou_gp.T.astype(np.float64)  # exact copy (float32 -> float64 is exact)
    work[~(iou_gp.T >= eps)] = -np.inf
    for _ in range(n_gt):
        flat = int(np.argmax(work))
        p, g = divmod(flat, n_gt)
        if work[p, g] == -np.inf:
            break
        m[p] = g
        work[p, :] = -np.inf  # prior taken
        work[:, g] = -np.inf  # gt taken

    # Stage B (per_prediction): every still-unmatched prior takes its best gt over ALL gts,
    # if IoU >= 1e-6 and IoU >= threshold (inclusive); ties -> lowest gt index.
    if match_type == "per_prediction":
        thr = dt.type(np.float32(overlap_threshold))
        cand = iou_gp.T.astype(np.float64)
        ok = (iou_gp.T >= eps) & (iou_gp.T >= thr)
        cand[~ok] = -np.inf
        best_g = np.argmax(cand, axis=1)
        has = ok.any(axis=1) & (m < 0)
        m[has] = best_g[has]
    return m


# --------------------------------------------------------------------------------------------
# Box encoding (semantics §3.5)
# --------------------------------------------------------------------------------------------
def encode(gt, priors, var):
    """Centre-size encoding of gt boxes against priors, row by row. All [K, 4], same dtype."""
    two = gt.dtype.type(2)
    pw = priors[:, 2] - priors[:, 0]
    ph = priors[:, 3] - priors[:, 1]
    pcx = priors[:, 0] + pw / two
    pcy = priors[:, 1] + ph / two
    gw = gt[:, 2] - gt[:, 0]
    gh = gt[:, 3] - gt[:, 1]
    gcx = (gt[:, 0] + gt[:, 2]) / two
    gcy = (gt[:, 1] + gt[:, 3]) / two
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = ((gcx - pcx) / pw) / var[:, 0]
        ty = ((gcy - pcy) / ph) / var[:, 1]
        tw = np.log(np.abs(gw / pw)) / var[:, 2]
        th = np.log(np.abs(gh / ph)) / var[:, 3]
    return np.stack([tx, ty, tw, th], axis=1).astype(gt.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# Softmax cross-entropy with the CPU kernel's -64 clamp (semantics §3.7)
# --------------------------------------------------------------------------------------------
def softmax_ce(logits, labels):
    """logits [K, C], labels [K] int. Returns (ce [K], q [K, C]) with the clamped softmax q."""
    dt = logits.dtype
    z = logits - logits.max(axis=1, keepdims=True)
    z = np.maximum(z, dt.type(-64))
    e = np.exp(z)
    q = e / e.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        ce = -np.log(q[np.arange(len(labels)), labels])
    return ce.astype(dt, copy=False), q.astype(dt, copy=False)


# --------------------------------------------------------------------------------------------
# Hard negative mining, max_negative (semantics §3.4)
# --------------------------------------------------------------------------------------------
def hardest(loss, idx, k):
    """The k hardest of the priors idx (by loss[idx]): NaN first, then loss descending, then index."""
    if k <= 0:
        return idx[:0]
    val = loss[idx].astype(np.float64)
    is_nan = np.isnan(val)
    key = np.where(is_nan, 0.0, -val)
    # np.lexsort: last key is primary. Primary: NaN first; then -loss ascending; then index.
    order = np.lexsort((idx, key, ~is_nan))
    return idx[order[:k]]


def mine_image(ce, m, neg_pos_ratio, min_negatives=0, excluded=None):
    """Returns a bool mask [Np] of mined negatives for one image (max_negative).

    Eligible = every unmatched prior not in `excluded` (neg_overlap_mode 'caffe'; in 'fluid' mode
    neg_overlap has no effect). K = max(min(trunc(f32(P)*f32(r)), #eligible),
    min(min_negatives, #eligible)). Order: NaN first, then loss descending, then prior index ascending.
    """
    neg = np.zeros(m.shape[0], dtype=bool)
    n_pos = int((m >= 0).sum())
    elig_mask = m < 0
    if excluded is not None:
        elig_mask &= ~excluded
    elig = np.nonzero(elig_mask)[0]
    k = min(int(np.float32(n_pos) * np.float32(neg_pos_ratio)), elig.size)
    k = max(k, min(int(min_negatives), elig.size))
    neg[hardest(ce, elig, k)] = True
    return neg


def mine_hard_examples(ce, m, sample_size):
    """hard_example mining of one image: returns (m after demotion, bool mask [Np] of negatives).

    Every prior is a candidate; the min(sample_size, Np) hardest are kept (same order as above).
    Kept unmatched priors are negatives; matched priors that are not kept become unmatched.
    """
    n_prior = m.shape[0]
    kept = np.zeros(n_prior, dtype=bool)
    kept[hardest(ce, np.arange(n_prior), min(int(sample_size), n_prior))] = True
    m = np.where(kept, m, -1)
    neg = kept & (m < 0)
    return m, neg


# --------------------------------------------------------------------------------------------
# Input normalisation helpers
# --------------------------------------------------------------------------------------------
def _labels_to_int(gt_label):
    lab = np.asarray(gt_label)
    if lab.ndim == 2:
        if lab.shape[1] != 1:
            raise ValueError("gt_label must have shape [Ng, 1] or [Ng]")
        lab = lab[:, 0]
    elif lab.ndim != 1:
        raise ValueError("gt_label must have shape [Ng, 1] or [Ng]")
    if np.issubdtype(lab.dtype, np.floating):
        lab = np.trunc(lab)  # truncation toward zero (1.7 -> 1, -0.5 -> 0)
    return lab.astype(np.int64)


def _variances(prior_box_var, n_prior, dt):
    if prior_box_var is None:
        return np.ones((n_prior, 4), dtype=dt)
    v = np.asarray(prior_box_var, dtype=dt)
    if v.shape == (4,):
        return np.broadcast_to(v, (n_prior, 4))
    if v.shape != (n_prior, 4):
        raise ValueError("prior_box_var must be None, 4 floats or an [Np, 4] array")
    return v


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------
def ssd_loss_reference(location, confidence, gt_box, gt_label, gt_lengths, prior_box, prior_box_var=None,
                       background_label=0, overlap_threshold=0.5, neg_pos_ratio=3.0, neg_overlap=0.5,
                       loc_loss_weight=1.0, conf_loss_weight=1.0, match_type='per_prediction',
                       mining_type='max_negative', normalize=True, sample_size=None, upstream=None,
                       normalization=None, min_negatives_per_image=0, neg_overlap_mode='fluid'):
    """returns dict(loss=[N,1], grad_location=[N,Np,4], grad_confidence=[N,Np,C], match=[N,Np] int, neg_mask=[N,Np] bool, num_pos=int,
                    target_class=[N,Np] int (-1: not in the conf loss), normalizer=float)
       match and num_pos are after hard_example demotion.
       gradients are d sum(loss * upstream) / d input (upstream [N,1], default ones)."""
    # ---- validation -------------------------------------------------------------------------
    if mining_type not in MINING_TYPES:
        raise ValueError("mining_type must be one of %s" % (MINING_TYPES,))
    if normalization is None:
        normalization = "valid" if normalize else "none"
    if normalization not in NORMALIZATIONS:
        raise ValueError("normalization must be None or one of %s" % (NORMALIZATIONS,))
    if neg_overlap_mode not in NEG_OVERLAP_MODES:
        raise ValueError("neg_overlap_mode must be one of %s" % (NEG_OVERLAP_MODES,))
    if int(min_negatives_per_image) < 0:
        raise ValueError("min_negatives_per_image must be >= 0")
    if mining_type == "hard_example":
        if sample_size is None or int(sample_size) <= 0:
            raise ValueError("sample_size must be > 0 with mining_type='hard_example'")
        if min_negatives_per_image or neg_overlap_mode != "fluid":
            raise ValueError("min_negatives_per_image and neg_overlap_mode apply to max_negative only")
    if match_type not in MATCH_TYPES:
        raise ValueError("match_type must be one of %s" % (MATCH_TYPES,))
    if not neg_pos_ratio > 0:
        raise ValueError("neg_pos_ratio must be > 0")
    if not 0 < neg_overlap < 1:
        raise ValueError("neg_overlap must lie in (0, 1)")

    location = np.asarray(location)
    confidence = np.asarray(confidence)
    dt = np.result_type(location, confidence)
    if dt not in (np.float32, np.float64):
        raise TypeError("location/confidence must be float32 or float64")
    dt = np.dtype(dt)
    location = location.astype(dt, copy=False)
    confidence = confidence.astype(dt, copy=False)
    N, Np, _ = location.shape
    C = confidence.shape[2]
    if confidence.shape[:2] != (N, Np):
        raise ValueError("location and confidence disagree on N, Np")

    prior_box = np.asarray(prior_box, dtype=dt).reshape(Np, 4)
    var = _variances(prior_box_var, Np, dt)
    gt_box = np.asarray(gt_box, dtype=dt).reshape(-1, 4)
    labels = _labels_to_int(gt_label)
    lens = np.asarray(gt_lengths, dtype=np.int64).reshape(-1)
    if lens.shape[0] != N or (lens < 0).any() or lens.sum() != gt_box.shape[0] or labels.shape[0] != gt_box.shape[0]:
        raise ValueError("gt_lengths must have N non-negative entries summing to Ng")
    offsets = np.concatenate([[0], np.cumsum(lens)])
    if upstream is None:
        upstream = np.ones((N, 1), dtype=dt)
    upstream = np.asarray(upstream, dtype=dt).reshape(N)

    loc_w = dt.type(np.float32(loc_loss_weight))  # C float attributes, as in fluid
    conf_w = dt.type(np.float32(conf_loss_weight))

    neg_ov = dt.type(np.float32(neg_overlap))  # a C float attribute
    match = np.full((N, Np), -1, dtype=np.int64)
    neg_mask = np.zeros((N, Np), dtype=bool)
    target_class = np.full((N, Np), -1, dtype=np.int64)
    S = np.zeros(N, dtype=dt)
    # per-image unscaled gradients of S_i (scaled by upstream / Z below)
    g_loc = np.zeros((N, Np, 4), dtype=dt)
    g_conf = np.zeros((N, Np, C), dtype=dt)

    for i in range(N):
        gts = gt_box[offsets[i]:offsets[i + 1]]
        labs = labels[offsets[i]:offsets[i + 1]]

        # matching
        iou_gp = iou(gts, prior_box)
        m = match_image(iou_gp, match_type, overlap_threshold)
        pos = m >= 0

        # class targets, one CE per prior (serves both mining and the final loss)
        y = np.full(Np, background_label, dtype=np.int64)
        y[pos] = labs[m[pos]]
        if ((y < 0) | (y >= C)).any():
            raise ValueError("class label / background_label out of range [0, C)")
        ce, q = softmax_ce(confidence[i], y)

        # mining
        if mining_type == "hard_example":
            m, neg = mine_hard_examples(ce, m, sample_size)
            pos = m >= 0
        else:
            excluded = None
            if neg_overlap_mode == "caffe" and len(gts):
                best = np.where(iou_gp >= dt.type(1e-6), iou_gp, dt.type(0)).max(axis=0)
                excluded = best >= neg_ov
            neg = mine_image(ce, m, neg_pos_ratio, min_negatives_per_image, excluded)
        match[i] = m
        neg_mask[i] = neg
        w_conf = pos | neg
        target_class[i] = np.where(w_conf, y, -1)

        # location loss on positives
        d = np.zeros((Np, 4), dtype=dt)
        if pos.any():
            t = encode(gts[m[pos]], prior_box[pos], var[pos])
            d[pos] = location[i, pos] - t
        ad = np.abs(d)
        quad = ad < 1
        sl1 = np.where(quad, dt.type(0.5) * d * d, ad - dt.type(0.5))
        L_loc = np.where(pos, sl1.sum(axis=1), dt.type(0))
        L_conf = np.where(w_conf, ce, dt.type(0))

        ell = conf_w * L_conf + loc_w * L_loc
        S[i] = ell.sum(dtype=dt)

        # gradients of S_i
        ds = np.where(quad, d, np.sign(d))
        g_loc[i] = np.where(pos[:, None], loc_w * ds, dt.type(0))
        onehot = np.zeros((Np, C), dtype=dt)
        onehot[np.arange(Np), y] = 1
        g_conf[i] = np.where(w_conf[:, None], conf_w * (q - onehot), dt.type(0))

    num_pos = int((match >= 0).sum())
    if normalization == "none":
        loss = S
        a = upstream
        Z = dt.type(1)
    else:
        Z = dt.type(max({"valid": num_pos, "full": N * Np, "batch_size": N}[normalization], 1))
        # 'valid': deviation, clamp at 1 (no NaN)
        loss = S / Z
        a = upstream / Z
    grad_location = (a[:, None, None] * g_loc).astype(dt, copy=False)
    grad_confidence = (a[:, None, None] * g_conf).astype(dt, copy=False)
    return dict(loss=loss.reshape(N, 1).astype(dt, copy=False), grad_location=grad_location,
                grad_confidence=grad_confidence, match=match, neg_mask=neg_mask, num_pos=num_pos,
                target_class=target_class, normalizer=float(Z))
