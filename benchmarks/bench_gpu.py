"""GPU benchmark of the CUDA kernels (module _core_cuda) against a PyTorch composite of the same
loss on the same card (benchmarks/torch_composite.py). Run it as `make bench-gpu` on a machine
with an NVIDIA GPU and PyTorch (CUDA build); it writes docs/benchmarks_gpu.md.

    python benchmarks/bench_gpu.py [--runs 50] [--out docs]

Inputs are bench_cpu.py's: SSD300's 8732 priors, 5 gt boxes per image, N(0, 1) predictions,
N = 32, C in {21, 81}, default attributes. Before any timing, both GPU paths are checked against
the CPU core (_core): the kernels' loss and gradients within 1e-6 relative (decisions identical),
the composite's within 1e-4. Times: the op's are device times of its kernels with the inputs
already on the device (_core_cuda.time_forward_backward: CUDA events around the enqueued
forward, and forward+backward, nothing copied in between); the composite's are CUDA events
around its forward+backward (torch.autograd.grad) on device tensors. Medians of --runs runs after
warm-up. The kernels are looked up as in tests/gpu (PADDLE_SSD_OP_CORE_CUDA, else
paddle_ssd_op._core_cuda, else _core_cuda on PYTHONPATH, e.g. build/cuda).
"""
import argparse
import datetime
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

SIZES = [(32, 21), (32, 81)]
TARGET_MS = {21: 0.100, 81: 0.250}  # the N=32 fwd+bwd targets on an H100-class GPU


def _import(env, names):
    errors = []
    for name in ([os.environ[env]] if os.environ.get(env) else names):
        try:
            return importlib.import_module(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise SystemExit("bench_gpu: cannot import " + " or ".join(names) + ": " + "; ".join(errors))


def _inputs(n, c):
    from bench_cpu import make_inputs
    from paddle_ssd_op.priors import ssd300_priors
    prior_box, prior_var = ssd300_priors()
    d = make_inputs(n, c, prior_box, prior_var)
    return (d["location"], d["confidence"], d["gt_box"], d["gt_label"].astype(np.int64).ravel(),
            d["gt_lengths"], d["prior_box"], d["prior_box_var"])


def _run_core(mod, args):
    saved = mod.forward(*args)
    n = args[0].shape[0]
    return [saved["loss"], *mod.backward(args[0], args[1], np.ones((n, 1), np.float32), saved)]


def _check(name, got, want, rtol):
    for label, a, b in zip(("loss", "grad_location", "grad_confidence"), got, want):
        scale = max(float(np.abs(b).max()), 1e-30)
        err = float(np.abs(np.asarray(a).reshape(b.shape) - b).max()) / scale
        if not err <= rtol:
            raise SystemExit(f"bench_gpu: {name} != CPU core on {label}: {err:.3g} of the largest "
                             f"magnitude (allowed {rtol})")


def _time_torch(torch, fn, runs):
    times = []
    for r in range(runs + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        if r >= 3:
            times.append(start.elapsed_time(end))
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    cuda = _import("PADDLE_SSD_OP_CORE_CUDA", ["paddle_ssd_op._core_cuda", "_core_cuda"])
    core = _import("PADDLE_SSD_OP_CORE", ["paddle_ssd_op._core", "_core"])
    if cuda.device_count() < 1:
        raise SystemExit("bench_gpu: _core_cuda is built but no CUDA device is visible")
    try:
        import torch
    except ImportError:
        raise SystemExit("bench_gpu: PyTorch is needed for the composite baseline")
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu: this PyTorch has no CUDA device")
    from torch_composite import ssd_loss_torch

    dev = torch.device("cuda")
    rows = []
    for n, c in SIZES:
        inputs = _inputs(n, c)
        loc, conf, gt_box, labels, lengths, prior_box, prior_var = inputs
        reference = _run_core(core, inputs)
        _check("_core_cuda", _run_core(cuda, inputs), reference, 1e-6)

        t = {k: torch.tensor(v, device=dev) for k, v in
             dict(loc=loc, conf=conf, gt=gt_box, lab=labels, prior=prior_box,
                  var=prior_var).items()}
        t["loc"].requires_grad_(True)
        t["conf"].requires_grad_(True)

        def composite():
            loss = ssd_loss_torch(t["loc"], t["conf"], t["gt"], t["lab"], t["prior"], t["var"],
                                  [int(k) for k in lengths])
            return [loss, *torch.autograd.grad(loss.sum(), [t["loc"], t["conf"]])]

        _check("the PyTorch composite", [x.detach().cpu().numpy() for x in composite()],
               reference, 1e-4)
        times = cuda.time_forward_backward(*inputs, runs=args.runs, warmup=5)
        op_fwd = float(np.median(times["forward_ms"]))
        op_fb = float(np.median(times["forward_backward_ms"]))
        torch_fb = _time_torch(torch, composite, max(5, args.runs // 5))
        rows.append(dict(n=n, c=c, op_fwd=op_fwd, op_fb=op_fb, torch_fb=torch_fb))
        print(f"N={n} C={c}: op fwd {op_fwd * 1e3:.1f} us, fwd+bwd {op_fb * 1e3:.1f} us "
              f"(target <= {TARGET_MS[c] * 1e3:.0f} us); PyTorch composite fwd+bwd "
              f"{torch_fb:.2f} ms = {torch_fb / op_fb:.1f}x the op's", flush=True)

    gpu = torch.cuda.get_device_name(0)
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip() or "?"
    lines = [
        "# GPU benchmark of the CUDA kernels", "",
        f"Generated by `python benchmarks/bench_gpu.py` on "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M} — do not edit by hand.", "",
        f"GPU: {gpu}; PyTorch {torch.__version__}; repository at `{commit}`. "
        "Inputs and method: see the docstring of benchmarks/bench_gpu.py (device times, medians "
        f"of {args.runs} runs; the kernels and the composite checked against the CPU core first).",
        "", "| N | C | op fwd (µs) | op fwd+bwd (µs) | target (µs) | PyTorch composite fwd+bwd "
        "(ms) | composite / op |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['c']} | {r['op_fwd'] * 1e3:.1f} | {r['op_fb'] * 1e3:.1f} "
                     f"| {TARGET_MS[r['c']] * 1e3:.0f} | {r['torch_fb']:.2f} "
                     f"| {r['torch_fb'] / r['op_fb']:.1f}x |")
    out = Path(args.out) / "benchmarks_gpu.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
