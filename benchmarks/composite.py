"""The SSD loss of ``paddle_ssd_op.ssd_loss`` written the straightforward way, with plain Paddle
dygraph ops and Paddle autograd: the baseline the fused op is compared with in bench_cpu.py.

Same semantics as the op (docs/semantics.md §3, §4, §11) for the inputs the benchmark uses:
batched IoU by broadcasting, greedy bipartite matching (one masked argmax per gt), the
per_prediction stage, the SSD box encoding, softmax cross-entropy, max-negative mining with a
stable descending argsort (ties: lowest prior first), smooth L1, per-image sums divided by the
batch's positive count (at least 1). Not reproduced: the -64 clamp of the shifted logits (it
matters only for logit spreads > 64); the benchmark uses N(0, 1) logits.
"""
import paddle
import paddle.nn.functional as F


def _pad_gts(gt_box, gt_label, gt_lengths):
    """[Ng, 4], [Ng(,1)], lengths -> padded [N, G, 4] boxes, [N, G] labels, [N, G] validity."""
    n, g = len(gt_lengths), max(max(gt_lengths), 1)
    boxes, labels, valid = [], [], []
    start = 0
    for k in gt_lengths:
        pad, box = g - k, gt_box[start:start + k]
        boxes.append(paddle.concat([box, paddle.zeros([pad, 4], box.dtype)]) if pad else box)
        lab = gt_label.reshape([-1])[start:start + k].astype("int64")
        labels.append(paddle.concat([lab, paddle.zeros([pad], "int64")]) if pad else lab)
        valid.append(paddle.to_tensor([True] * k + [False] * pad))
        start += k
    return paddle.stack(boxes), paddle.stack(labels), paddle.stack(valid).reshape([n, 1, g])


def _iou(gt, prior):
    """IoU [N, Np, G] of gt boxes [N, G, 4] and priors [Np, 4] (prior-major layout)."""
    a, b = gt.unsqueeze(1), prior.unsqueeze(1).unsqueeze(0)          # [N,1,G,4], [1,Np,1,4]
    area_a = (a[..., 3] - a[..., 1]) * (a[..., 2] - a[..., 0])
    area_b = (b[..., 3] - b[..., 1]) * (b[..., 2] - b[..., 0])
    iw = (paddle.minimum(a[..., 2], b[..., 2]) - paddle.maximum(a[..., 0], b[..., 0])).clip(min=0)
    ih = (paddle.minimum(a[..., 3], b[..., 3]) - paddle.maximum(a[..., 1], b[..., 1])).clip(min=0)
    inter = iw * ih
    return inter / (((area_a + area_b) - inter) + 1e-10)


def _match(iou, valid, match_type, overlap_threshold):
    """Matched gt per prior [N, Np] (-1 = none): greedy bipartite step, then per_prediction."""
    n, np_, g = iou.shape
    usable = (iou >= 1e-6) & valid
    work = paddle.where(usable, iou, paddle.full_like(iou, -1.0))
    match = paddle.full([n, np_], -1, "int64")
    for _ in range(g):
        # Flat argmax over the prior-major [Np, G] matrix: largest IoU, lowest prior, lowest gt.
        flat = paddle.argmax(work.reshape([n, -1]), axis=1)
        best = paddle.take_along_axis(work.reshape([n, -1]), flat.unsqueeze(1), 1).squeeze(1)
        found = (best >= 0).reshape([n, 1])
        p_sel = (F.one_hot(flat // g, np_) > 0) & found                  # [N, Np]
        g_sel = (F.one_hot(flat % g, g) > 0) & found                     # [N, G]
        match = paddle.where(p_sel, (flat % g).unsqueeze(1).expand([n, np_]), match)
        taken = p_sel.unsqueeze(2) | g_sel.unsqueeze(1)
        work = paddle.where(taken, paddle.full_like(work, -1.0), work)
    if match_type == "per_prediction":
        cand = paddle.where(usable & (iou >= overlap_threshold), iou, paddle.full_like(iou, -1.0))
        best_gt = paddle.argmax(cand, axis=2)                            # lowest gt on ties
        extra = (match < 0) & (cand.max(axis=2) >= 0)
        match = paddle.where(extra, best_gt, match)
    return match


def _encode(gt, prior, var):
    """SSD centre-size encoding of matched gt boxes [N, Np, 4] against priors [Np, 4]."""
    pw, ph = prior[:, 2] - prior[:, 0], prior[:, 3] - prior[:, 1]
    pcx, pcy = prior[:, 0] + pw / 2, prior[:, 1] + ph / 2
    gw, gh = gt[..., 2] - gt[..., 0], gt[..., 3] - gt[..., 1]
    gcx, gcy = (gt[..., 0] + gt[..., 2]) / 2, (gt[..., 1] + gt[..., 3]) / 2
    return paddle.stack([((gcx - pcx) / pw) / var[:, 0], ((gcy - pcy) / ph) / var[:, 1],
                         paddle.log((gw / pw).abs()) / var[:, 2],
                         paddle.log((gh / ph).abs()) / var[:, 3]], axis=-1)


def ssd_loss_composite(location, confidence, gt_box, gt_label, prior_box, prior_box_var=None,
                       background_label=0, overlap_threshold=0.5, neg_pos_ratio=3.0,
                       loc_loss_weight=1.0, conf_loss_weight=1.0, match_type="per_prediction",
                       normalize=True, *, gt_lengths):
    """Loss [N, 1]; gradients flow to ``location`` and ``confidence`` through Paddle autograd."""
    n, np_, c = confidence.shape
    if prior_box_var is None:
        prior_box_var = paddle.ones_like(prior_box)
    with paddle.no_grad():                       # matching, targets and mining are constants
        gts, labels, valid = _pad_gts(gt_box, gt_label, list(gt_lengths))
        match = _match(_iou(gts, prior_box), valid, match_type, overlap_threshold)
        pos = match >= 0
        idx = match.clip(min=0)
        target_cls = paddle.where(pos, paddle.take_along_axis(labels, idx, 1),
                                  paddle.full_like(idx, background_label))
        matched_box = paddle.take_along_axis(gts, idx.unsqueeze(2).expand([n, np_, 4]), 1)
        target_loc = paddle.where(pos.unsqueeze(2), _encode(matched_box, prior_box, prior_box_var),
                                  paddle.zeros_like(matched_box))
    ce = F.cross_entropy(confidence.reshape([-1, c]), target_cls.reshape([-1, 1]),
                         reduction="none").reshape([n, np_])
    with paddle.no_grad():                       # max-negative mining among unmatched priors
        num_pos = pos.astype("int64").sum(axis=1)
        k = paddle.minimum((num_pos.astype("float32") * neg_pos_ratio).astype("int64"),
                           np_ - num_pos)
        mine = paddle.where(pos, paddle.full_like(ce, float("-inf")), ce.detach())
        order = paddle.argsort(mine, axis=1, descending=True, stable=True)
        rank = paddle.argsort(order, axis=1)
        neg = (rank < k.unsqueeze(1)) & ~pos
        w_conf = (pos | neg).astype(ce.dtype)
        w_loc = pos.astype(ce.dtype)
        z = paddle.clip(w_loc.sum(), min=1.0) if normalize else paddle.ones([], ce.dtype)
    d = location - target_loc
    smooth_l1 = paddle.where(d.abs() < 1, 0.5 * d * d, d.abs() - 0.5).sum(axis=2)
    per_prior = conf_loss_weight * (w_conf * ce) + loc_loss_weight * (w_loc * smooth_l1)
    return per_prior.sum(axis=1, keepdim=True) / z
