"""Benchmark of paddle_ssd_op.DetectionMAP (vectorized NumPy) on one batch of 5000 images x 100
detections, 20 object classes (class_num 21), 5 gt boxes per image:

    python benchmarks/bench_detection_map.py                # full size
    python benchmarks/bench_detection_map.py --images 500   # smaller

It times, as the median of --runs runs after a warm-up run,
  * ours       DetectionMAP.update on a fresh metric (the batch's mAP, fluid's cur_map), and
               accumulate() after a second update of the same batch (both batches re-ranked);
  * fluid      fluid 1.8.5's detection_map op (one op without state, as DetectionMAP's cur_map;
               static program, CPU Executor, program cache, one thread), in a subprocess under
               .oracle-venv (make it with benchmarks/fluid_setup.sh); skipped when absent;
  * loop       the per-image loop reference of tests/test_detection_map.py (statement by
               statement from fluid's C++), run once in this process;
and prints each time, the ratios (wall and process CPU time: the latter is the robust one on a
loaded machine), and whether the three mAPs agree. This file is also the fluid
worker (``--fluid-worker INPUTS.npz``, run under .oracle-venv's Python 3.7).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLUID_PYTHON = ROOT / ".oracle-venv" / "bin" / "python"
CLASS_NUM = 21  # background 0 and 20 object classes
GT_PER_IMAGE = 5


def make_inputs(images, per_image, seed=2024):
    """Detections as detection_output gives them: per image, jittered copies of its gts (the
    right class mostly), the rest random boxes and classes; distinct random scores."""
    rng = np.random.default_rng([seed, images, per_image])
    ng = images * GT_PER_IMAGE
    centre, size = rng.uniform(0.1, 0.9, (ng, 2)), rng.uniform(0.05, 0.5, (ng, 2))
    gt_box = np.concatenate([centre - size / 2, centre + size / 2], 1).clip(0, 1)
    gt_label = rng.integers(1, CLASS_NUM, ng)
    nd = images * per_image
    image = np.repeat(np.arange(images), per_image)
    source = image * GT_PER_IMAGE + rng.integers(0, GT_PER_IMAGE, nd)
    true = rng.random(nd) < 0.3
    det_box = np.where(true[:, None], gt_box[source] + rng.normal(0, 0.03, (nd, 4)),
                       np.concatenate([centre[source] - 0.1, centre[source] + 0.2], 1)
                       + rng.normal(0, 0.2, (nd, 4)))
    det_label = np.where(true & (rng.random(nd) < 0.9), gt_label[source],
                         rng.integers(1, CLASS_NUM, nd))
    scores = rng.permutation(nd) / nd
    return dict(
        detections=np.concatenate([det_label[:, None], scores[:, None], det_box], 1)
        .astype(np.float32),
        detection_lengths=np.full(images, per_image, np.int64),
        gt_box=gt_box.astype(np.float32), gt_label=gt_label.astype(np.float32)[:, None],
        gt_lengths=np.full(images, GT_PER_IMAGE, np.int64),
        difficult=(rng.random((ng, 1)) < 0.1).astype(np.float32))


def median_ms(fn, runs, warmup=1):
    """(median wall ms, median process CPU ms, last result) of fn."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return 1e3 * float(np.median(wall)), 1e3 * float(np.median(cpu)), result


# ---------------------------------------------------------------------------------------------
# fluid worker (Python 3.7, paddle 1.8.5)

def fluid_worker(path, runs):
    os.environ.setdefault("GLOG_minloglevel", "2")
    import paddle
    import paddle.fluid as fluid
    from paddle.fluid.layers import detection  # detection_map is not in fluid.layers' __all__

    d = dict(np.load(path))
    main_prog, startup = fluid.Program(), fluid.Program()
    with fluid.program_guard(main_prog, startup):
        det = fluid.data("detections", [None, 6], "float32", lod_level=1)
        label = fluid.data("label", [None, 6], "float32", lod_level=1)
        # DetectionMAP's cur_map: its label tensor (label, difficult, box) and one stateless op
        mean_ap = detection.detection_map(det, label, CLASS_NUM, overlap_threshold=0.5,
                                          evaluate_difficult=True, ap_version="integral")
    place = fluid.CPUPlace()
    exe = fluid.Executor(place)
    exe.run(startup)
    gt = np.concatenate([d["gt_label"], d["difficult"], d["gt_box"]], 1)
    feed = {"detections": fluid.create_lod_tensor(
                d["detections"], [d["detection_lengths"].tolist()], place),
            "label": fluid.create_lod_tensor(gt, [d["gt_lengths"].tolist()], place)}

    def step():
        return exe.run(main_prog, feed=feed, fetch_list=[mean_ap], use_program_cache=True)[0]

    wall, cpu, value = median_ms(step, runs)
    print(json.dumps({"version": paddle.__version__,
                      "ms": wall, "cpu_ms": cpu, "map": float(np.array(value).reshape(-1)[0])}))


def run_fluid(inputs, runs):
    """fluid's figures on the inputs, or None without .oracle-venv."""
    if not FLUID_PYTHON.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inputs.npz"
        np.savez(path, **inputs)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CPU_NUM="1",
                   GLOG_minloglevel="2")
        proc = subprocess.run([str(FLUID_PYTHON), __file__, "--fluid-worker", str(path),
                               "--runs", str(runs)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise RuntimeError("the fluid worker failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# main (Paddle 2.6/3.x venv)

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--per-image", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-loop", action="store_true", help="skip the loop reference")
    parser.add_argument("--fluid-worker", metavar="INPUTS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fluid_worker:
        fluid_worker(args.fluid_worker, args.runs)
        return

    import zlib  # noqa: F401  -- before paddle (paddle 2.6.2's zlib)
    from paddle_ssd_op.detection_map import DetectionMAP
    sys.path.insert(0, str(ROOT / "tests"))
    from test_detection_map import reference_maps

    inputs = make_inputs(args.images, args.per_image)
    batch = dict(inputs)
    print(f"{args.images} images x {args.per_image} detections, class_num {CLASS_NUM}, "
          f"{GT_PER_IMAGE} gt/image; median of {args.runs} runs")

    def update():
        return DetectionMAP(CLASS_NUM).update(**batch)

    def accumulate_two():
        metric = DetectionMAP(CLASS_NUM)
        metric.update(**batch)
        metric.update(**batch)
        return metric.accumulate()

    ours_ms, ours_cpu, ours_map = median_ms(update, args.runs)
    two_ms, two_cpu, _ = median_ms(accumulate_two, args.runs)
    print(f"ours   update        {ours_ms:8.1f} ms (CPU {ours_cpu:.1f} ms)  mAP {ours_map:.7f}")
    print(f"ours   2 updates + accumulate {two_ms:.1f} ms (CPU {two_cpu:.1f} ms)")

    fluid = run_fluid(inputs, args.runs)
    if fluid is None:
        print("fluid  skipped (no .oracle-venv: bash benchmarks/fluid_setup.sh)")
    else:
        print(f"fluid  detection_map {fluid['ms']:8.1f} ms (CPU {fluid['cpu_ms']:.1f} ms)  "
              f"mAP {fluid['map']:.7f}  same: {fluid['map'] == ours_map}")
        print(f"ratio  ours / fluid  {ours_ms / fluid['ms']:8.2f} (CPU time: "
              f"{ours_cpu / fluid['cpu_ms']:.2f})")

    if not args.no_loop:
        loop_batch = dict(batch, gt_label=batch["gt_label"].reshape(-1),
                          difficult=batch["difficult"].reshape(-1))
        start = time.perf_counter()
        (loop_map,), _ = reference_maps([loop_batch], CLASS_NUM)
        loop_ms = 1e3 * (time.perf_counter() - start)
        print(f"loop   reference     {loop_ms:8.1f} ms (one run)  mAP {loop_map:.7f}  "
              f"same: {loop_map == ours_map}")
        print(f"ratio  loop / ours   {loop_ms / ours_ms:8.1f}")


if __name__ == "__main__":
    main()
