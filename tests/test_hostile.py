"""Hostile use, by class (docs/errors.md): resource limits, autograd modes, module reloads, empty
batches. Whatever is tried, the process survives and the answer is either the right one or a
Python exception naming the culprit. Limits are set in a subprocess of their own."""
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import paddle
import pytest

import paddle_ssd_op
from reference import ssd_loss_reference
from test_robustness import batch

TESTS = Path(__file__).resolve().parent


# A random batch (`make_batch`) and runners of the op (forward + backward, dygraph) and of
# _core.forward on it, giving their outputs as lists of NumPy arrays.
RUNNERS = """
def make_batch(n, num_priors, num_classes, seed=5):
    rng = np.random.default_rng(seed)
    centre = rng.uniform(.1, .9, (num_priors, 2))
    size = rng.uniform(.05, .4, (num_priors, 2))
    prior = np.concatenate([centre - size / 2, centre + size / 2], 1).astype(np.float32)
    lengths = [int(v) for v in rng.integers(0, 4, n)]
    num_gt = sum(lengths)
    gt = prior[rng.integers(0, num_priors, num_gt)] + rng.normal(0, .02, (num_gt, 4))
    return dict(location=rng.standard_normal((n, num_priors, 4)).astype(np.float32),
                confidence=rng.standard_normal((n, num_priors, num_classes)).astype(np.float32),
                gt_box=gt.astype(np.float32),
                gt_label=rng.integers(1, num_classes, (num_gt, 1)).astype(np.int32),
                gt_lengths=lengths, prior_box=prior)

b = make_batch(8, 64, 5)

def op():
    loc = paddle.to_tensor(b["location"], stop_gradient=False)
    conf = paddle.to_tensor(b["confidence"], stop_gradient=False)
    loss = paddle_ssd_op.ssd_loss(loc, conf, paddle.to_tensor(b["gt_box"]),
                                  paddle.to_tensor(b["gt_label"]), paddle.to_tensor(b["prior_box"]),
                                  gt_lengths=b["gt_lengths"])
    paddle.sum(loss).backward()
    return [loss.numpy(), loc.grad.numpy(), conf.grad.numpy()]

def core():
    out = _core.forward(b["location"], b["confidence"], b["gt_box"],
                        b["gt_label"].astype(np.int64).ravel(),
                        np.asarray(b["gt_lengths"], np.int64), b["prior_box"],
                        np.ones(4, np.float32))
    return [out["loss"], out["match"]]

def same(xs, ys):
    return all(np.array_equal(x, y, equal_nan=True) for x, y in zip(xs, ys))
"""


def run_script(body, timeout=300):
    """Runs RUNNERS and `body` in a fresh Python (this interpreter, tests/ importable, one OpenMP
    thread so that only the op itself needs new threads); returns the JSON its last line
    prints."""
    script = textwrap.dedent("""\
        import zlib, json, os, resource, sys
        import numpy as np, paddle, paddle_ssd_op
        from paddle_ssd_op import _core
        """) + RUNNERS + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=str(TESTS), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(TESTS))
    assert proc.returncode == 0, (f"exit code {proc.returncode} (a negative one is a signal)\n"
                                  f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])




def test_threads_that_cannot_start_leave_their_work_to_the_caller():
    """Under a limit on processes/threads (a container's pids limit, RLIMIT_NPROC) no thread can
    start: the op runs on the calling thread, with the bits of one thread."""
    out = run_script("""
        paddle_ssd_op.set_num_threads(1)
        ref_op, ref_core = op(), core()
        if os.getuid() == 0:  # root ignores RLIMIT_NPROC: become an unprivileged user
            os.setgid(65534)
            os.setuid(65534)
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
        import threading
        try:
            threading.Thread(target=lambda: None).start()
            limited = False
        except RuntimeError:
            limited = True
        paddle_ssd_op.set_num_threads(4)
        print(json.dumps({"limited": limited, "op": same(op(), ref_op),
                          "core": same(core(), ref_core),
                          "threads": paddle_ssd_op.get_num_threads()}))
        """)
    if not out["limited"]:
        pytest.skip("RLIMIT_NPROC does not stop new threads for this user")
    assert out == {"limited": True, "op": True, "core": True, "threads": 4}


@pytest.mark.slow
def test_memory_exhaustion_raises_memory_error():
    """Under an address-space limit any allocation may fail: Paddle's, the op's outputs, its
    workspace in worker threads (3 million priors: a workspace of hundreds of MB), the worker
    threads' stacks. Each limit of a sweep gives the unlimited result or MemoryError, never a
    dead process; some fail inside the op's own workspace (its message names the op)."""
    out = run_script("""
        b = make_batch(2, 3000000, 2)
        paddle_ssd_op.set_num_threads(3)
        ref_op, ref_core = op(), core()

        def vm_bytes():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmSize:"):
                        return int(line.split()[1]) * 1024

        outcomes = []
        for extra_mb in (0, 8, 16, 32, 64, 128, 192, 256, 320, 384, 512, 768, 1024, 4096):
            for name, fn, ref in (("op", op, ref_op), ("core", core, ref_core)):
                resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + (extra_mb << 20), -1))
                try:
                    outcome = "same" if same(fn(), ref) else "different"
                except MemoryError as e:
                    outcome = "MemoryError: " + str(e)[:200]
                except Exception as e:
                    outcome = type(e).__name__ + ": " + str(e)[:300]
                finally:
                    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))
                outcomes.append([name, extra_mb, outcome])
        print(json.dumps(outcomes))
        """)
    bad = [o for o in out if o[2] != "same" and not o[2].startswith("MemoryError")]
    assert not bad, bad
    for name, own_error in (("op", "fused_ssd_loss: out of host memory"),
                            ("core", "std::bad_alloc")):
        outcomes = [o[2] for o in out if o[0] == name]
        assert "same" in outcomes, (name, out)
        assert any(own_error in o for o in outcomes), (name, out)


def test_thread_count_is_capped_and_lowering_it_ends_threads():
    out = run_script("""
        def threads():
            return len(os.listdir("/proc/self/task"))

        result = {}
        try:
            paddle_ssd_op.set_num_threads(100000)
        except ValueError as e:
            result["error"] = str(e)
        paddle_ssd_op.set_num_threads(8)
        op()
        with_eight = threads()
        paddle_ssd_op.set_num_threads(2)
        result["ended"] = with_eight - threads()
        result["same"] = same(op(), op())
        print(json.dumps(result))
        """)
    assert "set_num_threads" in out["error"] and "1024" in out["error"]
    assert out["ended"] == 6  # the pool kept 7 threads for 8 images; 1 is enough for 2 workers
    assert out["same"]


def dygraph_inputs(seed=0):
    b = batch(seed=seed)
    loc = paddle.to_tensor(b["location"], stop_gradient=False)
    conf = paddle.to_tensor(b["confidence"], stop_gradient=False)
    rest = [paddle.to_tensor(b[k]) for k in ("gt_box", "gt_label", "prior_box")]
    return loc, conf, rest, b["gt_lengths"]


@pytest.mark.parametrize("mode", ["no_grad", "set_grad_enabled"])
def test_no_grad_records_no_graph(mode):
    loc, conf, rest, lengths = dygraph_inputs()
    with paddle.no_grad() if mode == "no_grad" else paddle.set_grad_enabled(False):
        frozen = paddle_ssd_op.ssd_loss(loc, conf, *rest, gt_lengths=lengths)
    assert frozen.stop_gradient
    live = paddle_ssd_op.ssd_loss(loc, conf, *rest, gt_lengths=lengths)
    assert not live.stop_gradient
    np.testing.assert_array_equal(frozen.numpy(), live.numpy())
    # A backward pass through both fills the gradients of the live one only.
    paddle.sum(live + frozen).backward()
    both = loc.grad.numpy().copy()
    loc.clear_gradient()
    paddle.sum(paddle_ssd_op.ssd_loss(loc, conf, *rest, gt_lengths=lengths)).backward()
    np.testing.assert_array_equal(both, loc.grad.numpy())


def test_second_order_gradient_is_refused_by_name():
    loc, conf, rest, lengths = dygraph_inputs()
    loss = paddle_ssd_op.ssd_loss(loc, conf, *rest, gt_lengths=lengths)
    (grad_loc,) = paddle.grad(paddle.sum(loss), loc, create_graph=True)  # first order: fine
    first = paddle_ssd_op.ssd_loss(loc, conf, *rest, gt_lengths=lengths)
    (expected,) = paddle.grad(paddle.sum(first), loc)
    np.testing.assert_array_equal(grad_loc.numpy(), expected.numpy())
    with pytest.raises(NotImplementedError, match="fused_ssd_loss.*no second-order gradient"):
        paddle.grad(paddle.sum(grad_loc * grad_loc), loc)


def test_second_order_gradient_is_refused_with_allow_unused():
    loc, conf, rest, lengths = dygraph_inputs()
    loss = paddle_ssd_op.ssd_loss(loc, conf, *rest, gt_lengths=lengths)
    (grad_conf,) = paddle.grad(paddle.sum(loss), conf, create_graph=True)
    with pytest.raises(NotImplementedError, match="fused_ssd_loss.*no second-order gradient"):
        paddle.grad(paddle.sum(grad_conf * grad_conf), [loc, conf], allow_unused=True)


def test_reload_keeps_the_op_working():
    loc, conf, rest, lengths = dygraph_inputs()
    before = paddle_ssd_op.ssd_loss(loc, conf, *rest, gt_lengths=lengths).numpy()
    module = importlib.reload(paddle_ssd_op)
    after = module.ssd_loss(loc, conf, *rest, gt_lengths=lengths).numpy()
    np.testing.assert_array_equal(before, after)


def test_minus_inf_logit_is_clamped_like_the_reference():
    """-Inf in `confidence` is a logit the softmax clamps (docs/semantics.md §3): a finite loss,
    equal to the reference; +Inf and NaN give that image a NaN loss (test_robustness.py)."""
    b = batch()
    b["confidence"][1, 3, 0] = -np.inf
    loc, conf, rest, lengths = dygraph_inputs()
    conf = paddle.to_tensor(b["confidence"], stop_gradient=False)
    loss = paddle_ssd_op.ssd_loss(loc, conf, *rest, gt_lengths=lengths)
    ref = ssd_loss_reference(**b)
    assert np.isfinite(loss.numpy()).all()
    np.testing.assert_allclose(loss.numpy(), ref["loss"], rtol=2e-5, atol=1e-6)


def test_empty_batch_in_a_static_program_is_refused_by_the_kernel():
    """N unknown when the program is built, 0 when it runs."""
    b = batch()
    main, startup = paddle.static.Program(), paddle.static.Program()
    paddle.enable_static()
    try:
        with paddle.static.program_guard(main, startup):
            loc = paddle.static.data("location", [-1, 6, 4], "float32")
            conf = paddle.static.data("confidence", [-1, 6, 4], "float32")
            box = paddle.static.data("gt_box", [-1, 4], "float32", lod_level=1)
            label = paddle.static.data("gt_label", [-1, 1], "int32", lod_level=1)
            prior = paddle.static.data("prior_box", [6, 4], "float32")
            loss = paddle_ssd_op.ssd_loss(loc, conf, box, label, prior)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        feed = {"location": np.zeros((0, 6, 4), np.float32),
                "confidence": np.zeros((0, 6, 4), np.float32),
                "gt_box": np.zeros((0, 4), np.float32), "gt_label": np.zeros((0, 1), np.int32),
                "prior_box": b["prior_box"]}
        with pytest.raises(ValueError, match=r"location: expected at least one image \(N > 0\)"):
            exe.run(main, feed=feed, fetch_list=[loss])
    finally:
        paddle.disable_static()
