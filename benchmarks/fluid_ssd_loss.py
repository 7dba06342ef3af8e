"""Times fluid 1.8.5's ``fluid.layers.ssd_loss`` (static graph, CPU Executor) on inputs saved by
bench_cpu.py. Runs under the Python 3.7 venv made by benchmarks/fluid_setup.sh:

    .oracle-venv/bin/python benchmarks/fluid_ssd_loss.py INPUTS.npz [--runs 9] [--out OUT.npz]
    .oracle-venv/bin/python benchmarks/fluid_ssd_loss.py INPUTS.npz --memory

INPUTS.npz holds location, confidence, gt_box, gt_label (int32), prior_box, prior_box_var and
gt_lengths. Prints one JSON line: median wall and process-CPU ms of forward and of
forward+backward (loss and both input gradients fetched, without conversion to NumPy; program
cache on, fluid's fastest way to run a program repeatedly); --out saves the loss and gradients for a
comparison with the op. With --memory instead: the peak extra resident memory of the first two
forward+backward runs. That run sets FLAGS_initial_cpu_memory_in_mb=1: by default fluid 1.8
grabs and touches a 500 MB CPU pool up front, which would hide the working set.
"""
import argparse
import ctypes
import json
import os
import sys
import time

os.environ.setdefault("CPU_NUM", "1")
os.environ.setdefault("GLOG_minloglevel", "2")
if "--memory" in sys.argv:
    os.environ["FLAGS_initial_cpu_memory_in_mb"] = "1"

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.fluid as fluid  # noqa: E402


def memory_kb():
    """(peak, current) resident set size of this process, in kB."""
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["VmHWM"].split()[0]), int(status["VmRSS"].split()[0])


def reset_peak():
    """Return freed heap memory to the OS, then reset VmHWM to the current RSS."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def median_ms(fn, runs, warmup=2):
    """(median wall ms, median process CPU ms) of fn over `runs` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return 1e3 * float(np.median(wall)), 1e3 * float(np.median(cpu))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("inputs")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--out")
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()
    d = dict(np.load(args.inputs))
    n, np_, c = d["confidence"].shape

    main_prog, startup = fluid.Program(), fluid.Program()
    with fluid.program_guard(main_prog, startup):
        loc = fluid.data("location", [n, np_, 4], "float32")
        conf = fluid.data("confidence", [n, np_, c], "float32")
        loc.stop_gradient = conf.stop_gradient = False
        box = fluid.data("gt_box", [None, 4], "float32", lod_level=1)
        label = fluid.data("gt_label", [None, 1], "int32", lod_level=1)
        prior = fluid.data("prior_box", [np_, 4], "float32")
        var = fluid.data("prior_box_var", [np_, 4], "float32")
        loss = fluid.layers.ssd_loss(loc, conf, box, label, prior, var)
        forward_prog = main_prog.clone()
        fluid.backward.append_backward(fluid.layers.reduce_sum(loss))

    place = fluid.CPUPlace()
    lod = [d["gt_lengths"].astype(int).tolist()]

    def tensor(array, with_lod=False):
        return (fluid.create_lod_tensor(array, lod, place) if with_lod
                else fluid.create_lod_tensor(array, [], place))

    feed = {"location": tensor(d["location"]), "confidence": tensor(d["confidence"]),
            "gt_box": tensor(d["gt_box"], True), "gt_label": tensor(d["gt_label"], True),
            "prior_box": tensor(d["prior_box"]), "prior_box_var": tensor(d["prior_box_var"])}
    exe = fluid.Executor(place)
    exe.run(startup)
    fetch = [loss.name, "location@GRAD", "confidence@GRAD"]

    def step(program=main_prog, fetch_list=fetch):
        return exe.run(program, feed=feed, fetch_list=fetch_list, return_numpy=False,
                       use_program_cache=True)

    if args.memory:
        reset_peak()
        _, base = memory_kb()
        step()
        step()
        print(json.dumps({"peak_extra_mb": (memory_kb()[0] - base) / 1024.0}))
        return
    outputs = step()
    if args.out:
        np.savez(args.out, loss=np.array(outputs[0]), dloc=np.array(outputs[1]),
                 dconf=np.array(outputs[2]))
    result = {"version": paddle.__version__}
    result["fwd_ms"], result["fwd_cpu_ms"] = median_ms(lambda: step(forward_prog, [loss.name]),
                                                       args.runs)
    result["fwdbwd_ms"], result["fwdbwd_cpu_ms"] = median_ms(step, args.runs)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
