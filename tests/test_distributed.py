"""Data-parallel training on CPU: ``python -m paddle.distributed.launch --nproc_per_node 2``
(gloo) runs examples/train_ssd_shapes.py with the global batch split over 2 processes, and gives
the losses, gradients and trained parameters of one process on the same global batch.

The example normalizes by the positives of the global batch (all-reduced ``num_positives`` of
``return_targets``) in the two-process run, and uses the op's default normalization in the
one-process run, so this also checks that the two agree. Values differ only by the order of
float32 sums (a convolution's weight gradient sums over the images of the batch, which the
processes split), hence the tolerances.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "train_ssd_shapes.py"
# 4 steps of 8 images (4 per process), seed chosen so that the halves differ in positives
ARGS = ["--steps", "4", "--batch-size", "8", "--lr", "0.003", "--eval-images", "0", "--no-plots",
        "--seed", "3"]
TIMEOUT = 300


def run(command, cwd):
    env = dict(os.environ, GLOG_minloglevel="2", PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, timeout=TIMEOUT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return result.returncode, result.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    code, out = run([sys.executable, EXAMPLE, *ARGS, "--threads", "2", "--dump", tmp / "one.npz",
                     "--out-dir", tmp / "one"], tmp)
    assert code == 0, f"one process failed:\n{out}"
    logs = tmp / "logs"
    code, out = run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                     "--max_restart", "0", "--log_dir", logs, EXAMPLE, *ARGS,
                     "--dump", tmp / "two.npz", "--out-dir", tmp / "two"], tmp)
    worker_logs = "".join(f"\n--- {p.name}\n{p.read_text()[-4000:]}"
                          for p in sorted(logs.glob("workerlog.*")))
    assert code == 0 and (tmp / "two.npz").exists(), \
        f"two processes failed (exit {code}):\n{out[-4000:]}{worker_logs}"
    assert "2 process(es)" in worker_logs, worker_logs
    return dict(np.load(tmp / "one.npz")), dict(np.load(tmp / "two.npz"))


def test_losses_equal(runs):
    one, two = runs
    assert one["losses"].shape == (4,)
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=2e-5)


def test_first_step_gradients_equal(runs):
    one, two = runs
    names = sorted(k for k in one if k.startswith("grad/"))
    assert names and names == sorted(k for k in two if k.startswith("grad/"))
    for name in names:
        scale = np.abs(one[name]).max()
        assert scale > 0, name
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5 * scale,
                                   err_msg=name)


def test_trained_parameters_equal(runs):
    one, two = runs
    names = sorted(k for k in one if k.startswith("param/"))
    assert names and names == sorted(k for k in two if k.startswith("param/"))
    for name in names:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
