"""train.py's static program trained data-parallel, one process per share of the batch (fluid's
ParallelExecutor / CompiledProgram, which PIR refuses, split the batch inside one process):

    python -m paddle.distributed.launch --nproc_per_node 2 \\
        examples/mobilenet_ssd/train_data_parallel.py --steps 300

Each process builds the same program and is fed its share of the global batch: its images and,
split by the LoD, their gt boxes. Two all-reduces in the program make the gradient that of one
process on the global batch: the positives of the global batch (each process's summed loss
rows are divided by them, as ssd_loss normalizes one batch) and the gradients (summed). The
backward and the update are ``append_backward`` and ``apply_gradients``, which ``minimize``
does in one. Communication is gloo on CPU: ``init_parallel_env`` on Paddle 3,
``gloo_init_parallel_env`` for Paddle 2.6's legacy programs.

Batch norm normalizes by each process's own share, as ParallelExecutor did per device; with
``--freeze-bn`` it uses the running statistics, and then 2 processes compute exactly what 1
process computes on the global batch (tests/test_mobilenet_ssd.py checks it).
"""
import zlib  # noqa: F401  -- must precede paddle: paddle 2.6.2 exports a zlib that crashes Python's
import argparse
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np
import paddle_ssd_op
import paddle
import paddle.distributed as dist

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import synthetic_voc as data  # noqa: E402
from mobilenet_ssd import mobilenet_ssd  # noqa: E402
from train import feed, parameter_names  # noqa: E402


def build_program(main_prog, startup_prog, world_size, learning_rate, freeze_bn=False):
    """The train program; returns the loss of the global batch."""
    with paddle.static.program_guard(main_prog, startup_prog):
        with paddle.utils.unique_name.guard():
            image = paddle.static.data("image", [None] + data.IMAGE_SHAPE, "float32")
            gt_box = paddle.static.data("gt_box", [None, 4], "float32", lod_level=1)
            gt_label = paddle.static.data("gt_label", [None, 1], "int32", lod_level=1)
            locs, confs, box, box_var = mobilenet_ssd(image, data.NUM_CLASSES, data.IMAGE_SHAPE)
            if freeze_bn:  # before the backward is built: its ops copy the attribute
                freeze_batch_norm(main_prog)
            rows, targets = paddle_ssd_op.ssd_loss(locs, confs, gt_box, gt_label, box, box_var,
                                                   normalization="none", return_targets=True)
            positives = paddle.cast(targets["num_positives"], "float32")
            if world_size > 1:
                dist.all_reduce(positives)            # the positives of the global batch
            loss = paddle.sum(rows) / positives       # this process's share of the global loss
            # PIR lists the batch-norm statistics too, without a gradient
            params_grads = [(p, g) for p, g in paddle.static.append_backward(loss)
                            if g is not None]
            if world_size > 1:
                for _, grad in params_grads:
                    dist.all_reduce(grad)             # summed: the global batch's gradient
            paddle.optimizer.SGD(learning_rate).apply_gradients(params_grads)
            global_loss = paddle.scale(loss, 1.0)
            if world_size > 1:
                dist.all_reduce(global_loss)
    return global_loss


def freeze_batch_norm(program):
    """Batch norm with the running statistics, in training too (use_global_stats)."""
    for op in program.global_block().ops:
        if op.name().startswith("pd_op.batch_norm") if paddle.framework.in_pir_mode() \
                else op.type == "batch_norm":
            if paddle.framework.in_pir_mode():
                op.set_bool_attr("use_global_stats", True)
            else:
                op._set_attr("use_global_stats", True)


def share(batch, rank, world_size):
    """This process's images of the global batch and their boxes (the LoD split)."""
    count = len(batch["lengths"]) // world_size
    bounds = np.cumsum([0] + batch["lengths"])
    first, last = rank * count, (rank + 1) * count
    rows = slice(bounds[first], bounds[last])
    return {"image": batch["image"][first:last], "gt_box": batch["gt_box"][rows],
            "gt_label": batch["gt_label"][rows], "difficult": batch["difficult"][rows],
            "lengths": batch["lengths"][first:last]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4, help="global, over all processes")
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--freeze-bn", action="store_true")
    parser.add_argument("--dump", help="rank 0 writes the losses and parameters here (.npz)")
    args = parser.parse_args(argv)
    world_size = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
    rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
    if args.batch_size % world_size:
        sys.exit("--batch-size must be a multiple of the %d processes" % world_size)
    if world_size > 1:
        if paddle.framework.use_pir_api():
            dist.init_parallel_env()
        else:  # the legacy collective ops use the gloo of gloo_init_parallel_env
            master = os.environ["PADDLE_TRAINER_ENDPOINTS"].split(",")[0].split(":")
            dist.gloo_init_parallel_env(rank, world_size,
                                        "%s:%d" % (master[0], int(master[1]) + 100))
    paddle.enable_static()

    main_prog, startup_prog = paddle.static.Program(), paddle.static.Program()
    loss = build_program(main_prog, startup_prog, world_size, args.learning_rate,
                         args.freeze_bn)
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    exe.run(startup_prog)
    # The same initial parameters in every process: the parity formula, in creation order.
    scope = paddle.static.global_scope()
    params = {p.name: p for p in main_prog.global_block().all_parameters()}
    trainable = [n for n in parameter_names(startup_prog) if n in params and params[n].trainable]
    for k, name in enumerate(trainable):
        tensor = scope.find_var(name).get_tensor()
        tensor.set(data.deterministic_value(k, np.array(tensor).shape), place)

    losses = []
    for step in range(args.steps):
        batch = share(data.make_batch(step, args.batch_size, min_boxes=1), rank, world_size)
        value, = exe.run(main_prog, feed=feed(batch, place), fetch_list=[loss])
        losses.append(float(np.asarray(value).ravel()[0]))
        if rank == 0 and step % 10 == 0:
            print("step {:d}, loss {:.6f} ({} process(es))".format(step, losses[-1], world_size),
                  flush=True)
    if args.dump and rank == 0:
        np.savez(args.dump, losses=np.array(losses),
                 **{"param/" + n: np.array(scope.find_var(n).get_tensor()) for n in trainable})


if __name__ == "__main__":
    main()
