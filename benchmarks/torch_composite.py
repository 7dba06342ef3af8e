"""The SSD loss written the straightforward way in PyTorch: the baseline of bench_gpu.py (the
issue's "PyTorch composite of the same loss on the same card").

Line for line the semantics of benchmarks/composite.py (the Paddle composite of bench_cpu.py):
batched IoU by broadcasting, greedy bipartite matching (one masked argmax per gt), the
per_prediction stage, SSD encoding, softmax cross-entropy, max-negative mining with a stable
descending sort, smooth L1, per-image sums divided by the batch's positive count (at least 1).
Not reproduced: the -64 clamp of the shifted logits (the benchmark uses N(0, 1) logits).
"""
import torch
import torch.nn.functional as F


def _pad_gts(gt_box, gt_label, gt_lengths):
    """[Ng, 4], [Ng(,1)], lengths -> padded [N, G, 4] boxes, [N, G] labels, [N, 1, G] validity."""
    n, g = len(gt_lengths), max(max(gt_lengths), 1)
    boxes = gt_box.new_zeros((n, g, 4))
    labels = torch.zeros((n, g), dtype=torch.int64, device=gt_box.device)
    valid = torch.zeros((n, g), dtype=torch.bool, device=gt_box.device)
    start = 0
    for i, k in enumerate(gt_lengths):
        boxes[i, :k] = gt_box[start:start + k]
        labels[i, :k] = gt_label.reshape(-1)[start:start + k].long()
        valid[i, :k] = True
        start += k
    return boxes, labels, valid.reshape(n, 1, g)


def _iou(gt, prior):
    """IoU [N, Np, G] of gt boxes [N, G, 4] and priors [Np, 4] (prior-major layout)."""
    a, b = gt.unsqueeze(1), prior.unsqueeze(1).unsqueeze(0)
    area_a = (a[..., 3] - a[..., 1]) * (a[..., 2] - a[..., 0])
    area_b = (b[..., 3] - b[..., 1]) * (b[..., 2] - b[..., 0])
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    return inter / (((area_a + area_b) - inter) + 1e-10)


def _match(iou, valid, match_type, overlap_threshold):
    """Matched gt per prior [N, Np] (-1 = none): greedy bipartite step, then per_prediction."""
    n, np_, g = iou.shape
    usable = (iou >= 1e-6) & valid
    work = torch.where(usable, iou, torch.full_like(iou, -1.0))
    match = torch.full((n, np_), -1, dtype=torch.int64, device=iou.device)
    rows = torch.arange(n, device=iou.device)
    for _ in range(g):
        # Flat argmax over the prior-major [Np, G] matrix (first maximum: lowest prior, then gt).
        flat = work.reshape(n, -1).argmax(dim=1)
        best = work.reshape(n, -1)[rows, flat]
        found = best >= 0
        p_sel, g_sel = flat // g, flat % g
        match[rows[found], p_sel[found]] = g_sel[found]
        work[rows[found], p_sel[found], :] = -1.0
        work[rows[found], :, g_sel[found]] = -1.0
    if match_type == "per_prediction":
        cand = torch.where(usable & (iou >= overlap_threshold), iou, torch.full_like(iou, -1.0))
        best, best_gt = cand.max(dim=2)  # first maximum: lowest gt
        match = torch.where((match < 0) & (best >= 0), best_gt, match)
    return match


def _encode(gt, prior, var):
    pw, ph = prior[:, 2] - prior[:, 0], prior[:, 3] - prior[:, 1]
    pcx, pcy = prior[:, 0] + pw / 2, prior[:, 1] + ph / 2
    gw, gh = gt[..., 2] - gt[..., 0], gt[..., 3] - gt[..., 1]
    gcx, gcy = (gt[..., 0] + gt[..., 2]) / 2, (gt[..., 1] + gt[..., 3]) / 2
    return torch.stack([((gcx - pcx) / pw) / var[:, 0], ((gcy - pcy) / ph) / var[:, 1],
                        torch.log((gw / pw).abs()) / var[:, 2],
                        torch.log((gh / ph).abs()) / var[:, 3]], dim=-1)


def ssd_loss_torch(location, confidence, gt_box, gt_label, prior_box, prior_box_var,
                   gt_lengths, background_label=0, overlap_threshold=0.5, neg_pos_ratio=3.0,
                   match_type="per_prediction"):
    """Loss [N, 1]; gradients flow to ``location`` and ``confidence`` through autograd."""
    n, np_, c = confidence.shape
    with torch.no_grad():
        gts, labels, valid = _pad_gts(gt_box, gt_label, list(gt_lengths))
        match = _match(_iou(gts, prior_box), valid, match_type, overlap_threshold)
        pos = match >= 0
        idx = match.clamp(min=0)
        target_cls = torch.where(pos, labels.gather(1, idx), torch.full_like(idx, background_label))
        matched = gts.gather(1, idx.unsqueeze(2).expand(n, np_, 4))
        target_loc = torch.where(pos.unsqueeze(2), _encode(matched, prior_box, prior_box_var),
                                 torch.zeros_like(matched))
    ce = F.cross_entropy(confidence.reshape(-1, c), target_cls.reshape(-1),
                         reduction="none").reshape(n, np_)
    with torch.no_grad():
        num_pos = pos.sum(dim=1)
        k = torch.minimum((num_pos.float() * neg_pos_ratio).long(), np_ - num_pos)
        mine = torch.where(pos, torch.full_like(ce, float("-inf")), ce.detach())
        order = torch.sort(mine, dim=1, descending=True, stable=True).indices
        rank = torch.argsort(order, dim=1)
        neg = (rank < k.unsqueeze(1)) & ~pos
        w_conf = (pos | neg).to(ce.dtype)
        w_loc = pos.to(ce.dtype)
        z = w_loc.sum().clamp(min=1.0)
    d = location - target_loc
    smooth_l1 = torch.where(d.abs() < 1, 0.5 * d * d, d.abs() - 0.5).sum(dim=2)
    return ((w_conf * ce) + (w_loc * smooth_l1)).sum(dim=1, keepdim=True) / z
