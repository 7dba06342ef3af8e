"""CPU benchmark of paddle_ssd_op.ssd_loss on SSD300 shapes (Np = 8732 real priors, 5 gt/image).

    python benchmarks/bench_cpu.py           # full run (`make bench`): docs/benchmarks.{md,png}
    python benchmarks/bench_cpu.py --quick   # smoke run: N=8 only, 3 runs, writes nothing

For N in {8, 32} and C in {21, 81} it times, as the median of 9 runs (--runs) after 2 warm-up
runs, wall clock and process CPU time (the robust figure when other processes load the machine),
forward (under no_grad) and forward+backward (``paddle.grad`` of the summed loss w.r.t. location
and confidence) of
  * op         paddle_ssd_op.ssd_loss (dygraph);
  * CE         Paddle's bare F.cross_entropy on the same [N*Np, C] logits (random labels);
  * composite  the same loss written with plain Paddle ops (benchmarks/composite.py); before any
               timing it is checked against the op (loss and both gradients, rtol 1e-4);
  * fluid      fluid 1.8.5's ssd_loss (static graph, Executor) on the same inputs, in a
               subprocess under .oracle-venv (make it with benchmarks/fluid_setup.sh), one thread;
               its loss and gradients are checked against the op (docs/semantics.md §10 tolerance).
Each thread count (1 and all cores) runs in its own subprocess with OMP_NUM_THREADS,
MKL_NUM_THREADS and PADDLE_SSD_OP_NUM_THREADS set, plus paddle.base.core.set_num_threads(n) and
paddle_ssd_op.set_num_threads(n); inside a process the timed runs of op, CE and composite are
interleaved, and the 1-thread process also times the op switched to all cores (interleaved
speedup). A last 1-thread process times only the op, with 1 thread and all cores in turn (its own
speedup, undisturbed by the other methods' OpenMP threads). A warning is printed (and written) if the installed op library changes during the run,
as it may while someone rebuilds it. Peak extra memory: a fresh 1-thread subprocess per method and
size builds the inputs, resets the kernel's resident-set high-water mark (/proc/self/clear_refs),
runs forward+backward once and reports VmHWM minus the RSS before the run (gradients included).
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLUID_PYTHON = ROOT / ".oracle-venv" / "bin" / "python"
SIZES = [(8, 21), (8, 81), (32, 21), (32, 81)]
GT_PER_IMAGE = 5
WARMUP = 2
METHODS = ("op", "ce", "composite")


# ---------------------------------------------------------------------------------------------
# shared helpers

def make_inputs(n, c, prior_box, prior_var, seed=2024):
    """Random N(0, 1) predictions and 5 object-like gt boxes per image (labels 1..C-1)."""
    rng = np.random.default_rng([seed, n, c])
    np_ = prior_box.shape[0]
    ng = n * GT_PER_IMAGE
    centre, size = rng.uniform(0.2, 0.8, (ng, 2)), rng.uniform(0.05, 0.5, (ng, 2))
    return dict(
        location=rng.standard_normal((n, np_, 4), dtype=np.float32),
        confidence=rng.standard_normal((n, np_, c), dtype=np.float32),
        gt_box=np.concatenate([centre - size / 2, centre + size / 2], 1).clip(0, 1)
        .astype(np.float32),
        gt_label=rng.integers(1, c, (ng, 1)).astype(np.int32),
        prior_box=prior_box, prior_box_var=prior_var,
        gt_lengths=np.full(n, GT_PER_IMAGE, np.int64),
        ce_label=rng.integers(0, c, (n * np_, 1)).astype(np.int64))


def memory_kb():
    """(peak, current) resident set size of this process in kB."""
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["VmHWM"].split()[0]), int(status["VmRSS"].split()[0])


def reset_peak():
    """Return freed heap memory to the OS, then reset VmHWM to the current RSS."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def interleaved_medians(fns, runs):
    """{key: (median wall ms, median process CPU ms)} of each function. The timed runs go
    round-robin over the functions, so that load from other processes hits every method alike;
    CPU time (all threads of this process) is the robust figure on a loaded machine."""
    for fn in fns.values():
        for _ in range(WARMUP):
            fn()
    wall, cpu = ({key: [] for key in fns} for _ in range(2))
    for _ in range(runs):
        for key, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
    return {key: (1e3 * float(np.median(wall[key])), 1e3 * float(np.median(cpu[key])))
            for key in fns}


def op_library():
    """Fingerprint of the installed op library (it may be rebuilt while the benchmark runs)."""
    import hashlib
    from paddle_ssd_op._loader import LIBRARY
    return hashlib.sha256(LIBRARY.read_bytes()).hexdigest()[:12]


def thread_env(threads):
    env = dict(os.environ, GLOG_minloglevel="2")
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PADDLE_SSD_OP_NUM_THREADS", "CPU_NUM"):
        env[key] = str(threads)
    return env


def run_json(cmd, env, timeout=1800):
    """Run a worker; its last stdout line is a JSON document."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise RuntimeError(f"worker failed ({proc.returncode}): {' '.join(map(str, cmd))}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# worker side (imports Paddle)

def _setup_paddle(threads):
    import warnings
    warnings.filterwarnings("ignore")
    import paddle
    import paddle_ssd_op
    paddle.base.core.set_num_threads(threads)  # MKL/OpenBLAS/OpenMP threads of Paddle's ops
    paddle_ssd_op.set_num_threads(threads)
    return paddle, paddle_ssd_op


def _methods(paddle, paddle_ssd_op, d, threads=1, all_threads=1):
    """{(method, mode): fn} on tensors built from the inputs dict d; mode is "fwd" (under
    no_grad) or "fwdbwd" (loss and paddle.grad of its sum). With all_threads > threads, also
    ("op_mt", "fwdbwd"): the op with all_threads threads, switched per call."""
    import paddle.nn.functional as F
    from composite import ssd_loss_composite

    loc = paddle.to_tensor(d["location"], stop_gradient=False)
    conf = paddle.to_tensor(d["confidence"], stop_gradient=False)
    const = [paddle.to_tensor(d[k]) for k in ("gt_box", "gt_label", "prior_box", "prior_box_var")]
    lengths = d["gt_lengths"].tolist()
    ce_label = paddle.to_tensor(d["ce_label"])

    def loss(method):
        if method == "ce":
            return F.cross_entropy(conf.reshape([-1, conf.shape[2]]), ce_label)
        if method == "composite":
            return ssd_loss_composite(loc, conf, *const, gt_lengths=lengths)
        paddle_ssd_op.set_num_threads(all_threads if method == "op_mt" else threads)
        return paddle_ssd_op.ssd_loss(loc, conf, *const, gt_lengths=lengths)

    def forward(method):
        def run():
            with paddle.no_grad():
                return loss(method)
        return run

    def forward_backward(method):
        wrt = [conf] if method == "ce" else [loc, conf]

        def run():
            out = loss(method)
            return (out,) + tuple(paddle.grad([out.sum()], wrt))
        return run

    fns = {}
    for m in METHODS:
        fns[(m, "fwd")], fns[(m, "fwdbwd")] = forward(m), forward_backward(m)
    if all_threads > threads:
        fns[("op_mt", "fwdbwd")] = forward_backward("op_mt")
    return fns


def check_composite(fns, rtol=1e-4, atol=1e-6):
    """The composite must give the op's loss and gradients (run once before any timing)."""
    ours = [t.numpy() for t in fns[("op", "fwdbwd")]()]
    theirs = [t.numpy() for t in fns[("composite", "fwdbwd")]()]
    diffs = {}
    for name, a, b in zip(("loss", "dloc", "dconf"), ours, theirs):
        diffs[name] = float(np.abs(a - b).max())
        if not np.allclose(a, b, rtol=rtol, atol=atol):
            raise AssertionError(f"composite != op on {name}: max |diff| {diffs[name]:.3g}")
    return ours, diffs


def worker_time(args):
    paddle, paddle_ssd_op = _setup_paddle(args.threads)
    from paddle_ssd_op.priors import ssd300_priors
    prior_box, prior_var = ssd300_priors()
    records, checks = [], {}
    for n, c in args.sizes:
        d = make_inputs(n, c, prior_box, prior_var)
        fns = _methods(paddle, paddle_ssd_op, d, args.threads, os.cpu_count() or 1)
        if args.op_only:  # the op's own thread scaling, with no other op between its runs
            fns = {("op_alone", "fwdbwd"): fns[("op", "fwdbwd")],
                   ("op_alone_mt", "fwdbwd"): fns[("op_mt", "fwdbwd")]}
        if args.dump:  # the 1-thread worker: check the composite, save inputs for fluid
            op_out, checks[f"{n}x{c}"] = check_composite(fns)
            np.savez(Path(args.dump) / f"in_{n}x{c}.npz", **d)
            np.savez(Path(args.dump) / f"op_{n}x{c}.npz", loss=op_out[0], dloc=op_out[1],
                     dconf=op_out[2])
        for (method, mode), (ms, cpu_ms) in interleaved_medians(fns, args.runs).items():
            records.append(dict(n=n, c=c, threads=args.threads, method=method, mode=mode, ms=ms,
                                cpu_ms=cpu_ms))
        del fns
    info = dict(paddle=paddle.__version__, op_version=paddle_ssd_op.__version__,
                op_file=str(Path(paddle_ssd_op.__file__).parent), op_library=op_library())
    print(json.dumps(dict(records=records, checks=checks, info=info)))


def worker_mem(args):
    import gc
    paddle, paddle_ssd_op = _setup_paddle(1)
    from paddle_ssd_op.priors import ssd300_priors
    prior_box, prior_var = ssd300_priors()
    (n, c), = args.sizes
    # Warm up (kernel registration, thread pools) on a tiny problem, then measure one run.
    tiny = make_inputs(1, c, prior_box[:64], prior_var[:64])
    _methods(paddle, paddle_ssd_op, tiny)[(args.method, "fwdbwd")]()
    fns = _methods(paddle, paddle_ssd_op, make_inputs(n, c, prior_box, prior_var))
    gc.collect()
    reset_peak()
    _, base = memory_kb()
    result = fns[(args.method, "fwdbwd")]()
    peak, _ = memory_kb()
    del result
    print(json.dumps(dict(peak_extra_mb=(peak - base) / 1024, op_library=op_library())))


# ---------------------------------------------------------------------------------------------
# driver

def run_fluid(dump, n, c, runs, memory, checks):
    """fluid 1.8.5 on the dumped inputs, one thread; checks its results against the op's."""
    out = Path(dump) / f"fluid_{n}x{c}.npz"
    cmd = [str(FLUID_PYTHON), str(HERE / "fluid_ssd_loss.py"), str(Path(dump) / f"in_{n}x{c}.npz")]
    res = run_json(cmd + ["--runs", str(runs), "--out", str(out)], thread_env(1))
    if memory:
        res.update(run_json(cmd + ["--memory"], thread_env(1)))
    op, fl = np.load(Path(dump) / f"op_{n}x{c}.npz"), np.load(out)
    for key in ("loss", "dloc", "dconf"):
        a, b = op[key], fl[key].reshape(op[key].shape)
        checks[key] = max(checks.get(key, 0.0), float(np.abs(a - b).max()))
        if not np.allclose(a, b, rtol=2e-5, atol=1e-6, equal_nan=True):
            raise AssertionError(f"op != fluid 1.8.5 on {key} at N={n}, C={c}: "
                                 f"max |diff| {np.abs(a - b).max():.3g}")
    return res


def machine_info(cmdline, worker_info):
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    return dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(),
                date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), command=cmdline,
                commit=commit, **worker_info)


def build_rows(records, fluid, mem, thread_counts):
    t = {(r["n"], r["c"], r["threads"], r["method"], r["mode"]): r["ms"] for r in records}
    cpu = {(r["n"], r["c"], r["method"]): r["cpu_ms"] for r in records
           if r["threads"] == 1 and r["mode"] == "fwdbwd"}
    rows = []
    for n, c in sorted({(r["n"], r["c"]) for r in records}):
        for th in thread_counts:
            get = lambda m, mode: t.get((n, c, th, m, mode))  # noqa: E731
            fl = fluid.get((n, c)) if th == 1 else None
            op = get("op", "fwdbwd")
            rows.append(dict(
                n=n, c=c, threads=th, op_fwd=get("op", "fwd"), op_fb=op,
                ce_fwd=get("ce", "fwd"), ce_fb=get("ce", "fwdbwd"),
                comp_fwd=get("composite", "fwd"), comp_fb=get("composite", "fwdbwd"),
                fluid_fwd=fl and fl["fwd_ms"], fluid_fb=fl and fl["fwdbwd_ms"],
                op_vs_ce=op / get("ce", "fwdbwd"), comp_vs_op=get("composite", "fwdbwd") / op,
                fluid_vs_op=fl and fl["fwdbwd_ms"] / op,
                speedup=t[(n, c, 1, "op", "fwdbwd")] / op,
                speedup_inproc=t[(n, c, 1, "op", "fwdbwd")] / t[(n, c, 1, "op_mt", "fwdbwd")]
                if th > 1 else None,
                speedup_alone=t[(n, c, 1, "op_alone", "fwdbwd")]
                / t[(n, c, 1, "op_alone_mt", "fwdbwd")] if th > 1 else None))
            if th == 1:
                rows[-1].update(
                    op_cpu=cpu[(n, c, "op")], ce_cpu=cpu[(n, c, "ce")],
                    comp_cpu=cpu[(n, c, "composite")], fluid_cpu=fl and fl["fwdbwd_cpu_ms"],
                    op_vs_ce_cpu=cpu[(n, c, "op")] / cpu[(n, c, "ce")],
                    fluid_vs_op_cpu=fl and fl["fwdbwd_cpu_ms"] / cpu[(n, c, "op")])
    mem_rows = [dict(n=n, c=c, logits_mb=n * 8732 * c * 4 / 2**20,
                     **{m: mem.get((n, c, m)) for m in METHODS + ("fluid",)})
                for n, c in sorted({(n, c) for n, c, _ in mem})]
    return rows, mem_rows


def fmt(x, spec=".1f"):
    return "–" if x is None else format(x, spec)


def tables(rows, mem_rows):
    head = ("| N | C | threads | op fwd | op f+b | CE fwd | CE f+b | composite fwd | composite f+b "
            "| fluid fwd | fluid f+b | op/CE f+b | composite/op f+b | fluid/op f+b "
            "| op f+b speedup vs 1 thread: op alone / interleaved / separate processes |")
    lines = ["Times in ms (median); f+b = forward+backward.", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append("| " + " | ".join([str(r["n"]), str(r["c"]), str(r["threads"])] + [
            fmt(r[k]) for k in ("op_fwd", "op_fb", "ce_fwd", "ce_fb", "comp_fwd", "comp_fb",
                                "fluid_fwd", "fluid_fb")] + [
            fmt(r["op_vs_ce"], ".3f"), fmt(r["comp_vs_op"], ".1f") + "x",
            (fmt(r["fluid_vs_op"], ".1f") + "x") if r["fluid_vs_op"] else "–",
            "–" if r["threads"] == 1 else
            f"{r['speedup_alone']:.2f}x / {r['speedup_inproc']:.2f}x / {r['speedup']:.2f}x"])
            + " |")
    lines += ["", "Forward+backward, 1 thread, median process CPU time in ms (robust to other "
              "load on the machine):", "",
              "| N | C | op | CE | composite | fluid 1.8.5 | op/CE | fluid/op |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["threads"] == 1:
            lines.append("| " + " | ".join([str(r["n"]), str(r["c"])] + [
                fmt(r[k]) for k in ("op_cpu", "ce_cpu", "comp_cpu", "fluid_cpu")] + [
                fmt(r["op_vs_ce_cpu"], ".3f"),
                fmt(r["fluid_vs_op_cpu"], ".1f") + "x" if r["fluid_vs_op_cpu"] else "–"]) + " |")
    if mem_rows:
        lines += ["", "Peak extra resident memory of one forward+backward, MB (1 thread, "
                  "input gradients included; logits = size of `confidence`):", "",
                  "| N | C | logits | op | CE | composite | fluid 1.8.5 |",
                  "|---|---|---|---|---|---|---|"]
        for m in mem_rows:
            lines.append("| " + " | ".join([str(m["n"]), str(m["c"])] + [
                fmt(m[k]) for k in ("logits_mb",) + METHODS + ("fluid",)]) + " |")
    return "\n".join(lines)


def headline(rows):
    pick = {(r["n"], r["c"], r["threads"]): r for r in rows}
    out = []
    if (32, 21, 1) in pick:
        r = pick[(32, 21, 1)]
        out.append(f"- N=32, C=21, 1 thread, fwd+bwd: op / CE = **{r['op_vs_ce']:.3f}** "
                   f"(target ≤ 0.25; CPU time: {r['op_vs_ce_cpu']:.3f}); "
                   f"op {r['op_fb']:.1f} ms, CE {r['ce_fb']:.1f} ms")
        if r["fluid_vs_op"]:
            out.append(f"- N=32, C=21, 1 thread, fwd+bwd: fluid 1.8.5 / op = "
                       f"**{r['fluid_vs_op']:.1f}x** (target ≥ 25x; CPU time: "
                       f"{r['fluid_vs_op_cpu']:.1f}x); fluid {r['fluid_fb']:.1f} ms")
    if (32, 81, 1) in pick:
        r = pick[(32, 81, 1)]
        out.append(f"- N=32, C=81, 1 thread, fwd+bwd: op / CE = **{r['op_vs_ce']:.3f}** "
                   f"(CPU time: {r['op_vs_ce_cpu']:.3f}); "
                   f"fluid / op = {fmt(r['fluid_vs_op'], '.1f')}x")
    for (n, c, th), r in sorted(pick.items()):
        if n == 32 and th > 1:
            out.append(f"- N=32, C={c}, op fwd+bwd, {th} threads vs 1: "
                       f"**{r['speedup_alone']:.2f}x** (the op alone, interleaved in a process "
                       f"of its own); {r['speedup_inproc']:.2f}x interleaved with CE and the "
                       f"composite; {r['speedup']:.2f}x across the two processes "
                       f"({pick[(n, c, 1)]['op_fb']:.1f} → {r['op_fb']:.1f} ms)")
    return "\n".join(out) or "(no N=32 size in this run)"


def bar_chart(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = sorted({(r["n"], r["c"]) for r in rows})
    pick = {(r["n"], r["c"], r["threads"]): r for r in rows}
    all_threads = max(r["threads"] for r in rows)
    series = [("op, 1 thread", 1, "op_fb"), (f"op, {all_threads} threads", all_threads, "op_fb"),
              ("Paddle cross_entropy", 1, "ce_fb"), ("Paddle composite", 1, "comp_fb"),
              ("fluid 1.8.5 ssd_loss", 1, "fluid_fb")]
    series = [s for i, s in enumerate(series) if not (i == 1 and all_threads == 1)]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(series)
    for i, (label, th, key) in enumerate(series):
        vals = [pick.get((n, c, th), {}).get(key) or 0 for n, c in sizes]
        bars = ax.bar(np.arange(len(sizes)) + i * width, vals, width, label=label)
        ax.bar_label(bars, [f"{v:.0f}" if v else "" for v in vals], fontsize=7)
    ax.set_xticks(np.arange(len(sizes)) + 0.4 - width / 2, [f"N={n}, C={c}" for n, c in sizes])
    ax.set_yscale("log")
    ax.set_ylabel("forward+backward, ms (log scale)")
    ax.set_title("ssd_loss on CPU, Np = 8732 SSD300 priors, 5 gt/image")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_markdown(path, png, info, rows, mem_rows, checks, fluid_checks):
    def diffs(d):
        return ", ".join(f"{k} {v:.1e}" for k, v in d.items())
    comp = {key: max(d[key] for d in checks.values()) for key in ("loss", "dloc", "dconf")}
    text = f"""# CPU benchmark of `paddle_ssd_op.ssd_loss`

Generated by `{info['command']}` on {info['date']} — do not edit by hand.

Machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, Paddle {info['paddle']},
paddle_ssd_op {info['op_version']} (from `{info['op_file']}`, library
`{info['op_library']}`), repository at `{info['commit']}`;
fluid 1.8.5 baseline: {'yes' if info['fluid'] else 'not run (no .oracle-venv)'}; 1-minute load
average {info['load']} (anything well above 0 means other processes competed for the cores).
{('**' + info['changed'] + '**') if info['changed'] else ''}

Inputs: SSD300's 8732 priors with variances (0.1, 0.1, 0.2, 0.2), 5 random gt boxes per image,
N(0, 1) location and confidence; default attributes (per_prediction, 0.5, ratio 3, normalize).
Each time is the median of {info['runs']} runs after {WARMUP} warm-up runs. Forward runs under
`paddle.no_grad()`; forward+backward is `paddle.grad(loss.sum(), [location, confidence])`.
**CE** is `F.cross_entropy` on the same `[N*Np, C]` logits alone (the floor of any SSD loss
that uses a softmax). **composite** is the same loss written with plain Paddle ops
(`benchmarks/composite.py`); it is checked against the op before timing (loss and gradients,
rtol 1e-4, atol 1e-6). **fluid 1.8.5** is `fluid.layers.ssd_loss` in a static program run by the
Executor (`benchmarks/fluid_ssd_loss.py`, one thread: `CPU_NUM=1 OMP_NUM_THREADS=1`, its own
process, so not interleaved with the others); its loss and gradients are checked against the op
(rtol 2e-5, atol 1e-6, docs/semantics.md §10). Largest |diff| over all sizes: composite vs op
{diffs(comp)}; fluid vs op {diffs(fluid_checks) or '–'}. Threads: each count runs in its own process with `OMP_NUM_THREADS`,
`MKL_NUM_THREADS`, `PADDLE_SSD_OP_NUM_THREADS` = n, `paddle.base.core.set_num_threads(n)` and
`paddle_ssd_op.set_num_threads(n)`. The timed runs of op, CE and composite are interleaved
(round-robin) in each process, and the 1-thread process also times the op with all cores
(`paddle_ssd_op.set_num_threads`, switched per call) for the interleaved speedup. A last process
(Paddle at 1 thread) times only the op, switched between 1 thread and all cores per call: the
op's own speedup, without CE's and the composite's OpenMP threads, which keep spinning on the
cores for a while after each of their runs.

## Headline

{headline(rows)}

## All results

{tables(rows, mem_rows)}

Memory: a fresh process per method and size builds its inputs, resets the resident-set
high-water mark (`/proc/self/clear_refs`, after `malloc_trim`), runs forward+backward once (after
a warm-up on 64 priors) and reports `VmHWM` minus the RSS before the run. fluid's figure covers
its first two Executor runs (scope set-up included) with `FLAGS_initial_cpu_memory_in_mb=1`;
by default fluid 1.8 reserves and touches a 500 MB CPU pool up front.

![forward+backward times]({png.name})
"""
    path.write_text(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: N=8 only, 3 runs")
    parser.add_argument("--runs", type=int, help="timed runs per measurement (default 9)")
    parser.add_argument("--out", help="folder for benchmarks.md/.png "
                                      "(default: docs/; with --quick: none)")
    parser.add_argument("--no-fluid", action="store_true", help="skip the fluid 1.8.5 baseline")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--worker", choices=("time", "mem"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    parser.add_argument("--op-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [(n, c) for n, c in SIZES if n == 8] if args.quick else SIZES
    if args.sizes:
        sizes = [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")]
    args.sizes = sizes
    args.runs = args.runs or (3 if args.quick else 9)
    if args.worker:
        return (worker_time if args.worker == "time" else worker_mem)(args)

    cmdline = "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:])
    thread_counts = sorted({1, os.cpu_count() or 1})
    size_arg = ",".join(f"{n}x{c}" for n, c in sizes)
    me = [sys.executable, str(Path(__file__).resolve())]
    use_fluid = not args.no_fluid and FLUID_PYTHON.exists()
    load_before = os.getloadavg()[0]
    if load_before > 0.5 * thread_counts[-1]:
        print(f"warning: load average {load_before:.1f} on {thread_counts[-1]} cores; other "
              "processes will distort the times", flush=True)
    records, fluid, mem, fluid_checks, libraries = [], {}, {}, {}, set()
    with tempfile.TemporaryDirectory(prefix="ssd_bench_") as dump:
        for th in thread_counts:
            print(f"timing op, CE, composite with {th} thread(s) ...", flush=True)
            cmd = me + ["--worker", "time", "--threads", str(th), "--sizes", size_arg,
                        "--runs", str(args.runs)] + (["--dump", dump] if th == 1 else [])
            res = run_json(cmd, thread_env(th))
            records += res["records"]
            libraries.add(res["info"]["op_library"])
            if th == 1:
                checks, worker_info = res["checks"], res["info"]
        if thread_counts[-1] > 1:
            print(f"timing the op alone with 1 and {thread_counts[-1]} threads ...", flush=True)
            records += run_json(me + ["--worker", "time", "--threads", "1", "--op-only",
                                      "--sizes", size_arg, "--runs", str(args.runs)],
                                thread_env(1))["records"]
        if use_fluid:
            for n, c in sizes:
                print(f"timing fluid 1.8.5, N={n} C={c} ...", flush=True)
                fluid[(n, c)] = run_fluid(dump, n, c, args.runs, not args.no_memory, fluid_checks)
                mem[(n, c, "fluid")] = fluid[(n, c)].get("peak_extra_mb")
    if not args.no_memory:
        print("measuring peak memory ...", flush=True)
        for n, c in sizes:
            for m in METHODS:
                res = run_json(me + ["--worker", "mem", "--method", m, "--sizes", f"{n}x{c}"],
                               thread_env(1))
                mem[(n, c, m)] = res["peak_extra_mb"]
                libraries.add(res["op_library"])
    else:
        mem = {}

    rows, mem_rows = build_rows(records, fluid, mem, thread_counts)
    changed = (f"warning: the op library changed during the run (fingerprints "
               f"{', '.join(sorted(libraries))}); the numbers mix two builds, run again"
               if len(libraries) > 1 else "")
    print()
    print(tables(rows, mem_rows))
    print()
    print(headline(rows))
    if changed:
        print("\n" + changed)
    out = args.out or (None if args.quick else str(ROOT / "docs"))
    if out:
        info = machine_info(cmdline, worker_info)
        info.update(runs=args.runs, fluid=use_fluid, changed=changed,
                    load=f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
        Path(out).mkdir(parents=True, exist_ok=True)
        png, md = Path(out) / "benchmarks.png", Path(out) / "benchmarks.md"
        bar_chart(rows, png)
        write_markdown(md, png, info, rows, mem_rows, checks, fluid_checks)
        print(f"\nwrote {md} and {png}")


if __name__ == "__main__":
    main()
