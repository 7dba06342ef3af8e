"""Pure-NumPy reference implementation of the SSD multibox loss (fluid 1.8.5 ``ssd_loss``).

Written from ``ssd_loss_semantics.md`` (sections 3, 4, 5 and the decided deviations in section 11).
It is deliberately plain: one image at a time, vectorised over priors where that is easy.

Arithmetic is done in the input float dtype (float32 or float64): ``location`` and ``confidence``
fix it, and the boxes, variances and upstream weights are cast to it. Scalar attributes are
float32 in the original op (attributes are C ``float``), so the per_prediction threshold and the
negative/positive ratio are rounded to float32 before use.

Deliberate deviations from the 1.8.5 original (spec section 11):
  * normalize=True with zero positives in the batch: divisor clamped at 1 -> loss 0, grads 0.
  * images with 0 gt boxes are allowed (no positives, no mined negatives).
  * prior_box_var=None means unit variances; a list of 4 floats or an [Np, 4] array also works.
  * float64 inputs and int32/int64/float labels (shape [Ng, 1] or [Ng]) are supported.
  * every image uses the same greedy matching rule (no separate path for >= 130 gts).
  * mining ties: loss descending, then prior index ascending; NaN losses rank first.
"""

import numpy as np

MATCH_TYPES = ("bipartite", "per_prediction")


# --------------------------------------------------------------------------------------------
# IoU (spec 3.1)
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
# Matching (spec 3.2)
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
# Box encoding (spec 3.5)
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
# Softmax cross-entropy with the CPU kernel's -64 clamp (spec 3.7)
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
# Hard negative mining, max_negative (spec 3.4)
# --------------------------------------------------------------------------------------------
def mine_image(ce, m, neg_pos_ratio):
    """Returns a bool mask [Np] of mined negatives for one image.

    Eligible = every unmatched prior (neg_overlap has no effect). K = min(trunc(f32(P)*f32(r)),
    #eligible). Order: NaN first, then loss descending, then prior index ascending.
    """
    neg = np.zeros(m.shape[0], dtype=bool)
    n_pos = int((m >= 0).sum())
    elig = np.nonzero(m < 0)[0]
    k = min(int(np.float32(n_pos) * np.float32(neg_pos_ratio)), elig.size)
    if k <= 0:
        return neg
    loss = ce[elig].astype(np.float64)
    is_nan = np.isnan(loss)
    key = np.where(is_nan, 0.0, -loss)
    # np.lexsort: last key is primary. Primary: NaN first; then -loss ascending; then index.
    order = np.lexsort((elig, key, ~is_nan))
    neg[elig[order[:k]]] = True
    return neg


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
                       mining_type='max_negative', normalize=True, sample_size=None, upstream=None):
    """returns dict(loss=[N,1], grad_location=[N,Np,4], grad_confidence=[N,Np,C], match=[N,Np] int, neg_mask=[N,Np] bool, num_pos=int)
       gradients are d sum(loss * upstream) / d input (upstream [N,1], default ones)."""
    # ---- validation -------------------------------------------------------------------------
    if mining_type != "max_negative":
        raise NotImplementedError("mining_type %r is not implemented" % (mining_type,))
    if match_type not in MATCH_TYPES:
        raise ValueError("match_type must be one of %s" % (MATCH_TYPES,))
    if not neg_pos_ratio > 0:
        raise ValueError("neg_pos_ratio must be > 0")
    if not 0 < neg_overlap < 1:
        raise ValueError("neg_overlap must lie in (0, 1)")
    del sample_size  # unused, as in the original

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

    loc_w = dt.type(loc_loss_weight)
    conf_w = dt.type(conf_loss_weight)

    match = np.full((N, Np), -1, dtype=np.int64)
    neg_mask = np.zeros((N, Np), dtype=bool)
    S = np.zeros(N, dtype=dt)
    # per-image unscaled gradients of S_i (scaled by upstream / Z below)
    g_loc = np.zeros((N, Np, 4), dtype=dt)
    g_conf = np.zeros((N, Np, C), dtype=dt)

    for i in range(N):
        gts = gt_box[offsets[i]:offsets[i + 1]]
        labs = labels[offsets[i]:offsets[i + 1]]

        # matching
        m = match_image(iou(gts, prior_box), match_type, overlap_threshold)
        pos = m >= 0
        match[i] = m

        # class targets, one CE per prior (serves both mining and the final loss)
        y = np.full(Np, background_label, dtype=np.int64)
        y[pos] = labs[m[pos]]
        if ((y < 0) | (y >= C)).any():
            raise ValueError("class label / background_label out of range [0, C)")
        ce, q = softmax_ce(confidence[i], y)

        # mining
        neg = mine_image(ce, m, neg_pos_ratio)
        neg_mask[i] = neg
        w_conf = pos | neg

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
    if normalize:
        Z = dt.type(max(num_pos, 1))  # deviation: clamp at 1 (no NaN)
        loss = S / Z
        a = upstream / Z
    else:
        loss = S
        a = upstream
    grad_location = (a[:, None, None] * g_loc).astype(dt, copy=False)
    grad_confidence = (a[:, None, None] * g_conf).astype(dt, copy=False)
    return dict(loss=loss.reshape(N, 1).astype(dt, copy=False), grad_location=grad_location,
                grad_confidence=grad_confidence, match=match, neg_mask=neg_mask, num_pos=num_pos)
