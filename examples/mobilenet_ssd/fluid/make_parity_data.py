"""Writes tests/data/mobilenet_ssd/{fluid,fluid_reversed}.npz: what fluid 1.8.5's own
MobileNet-SSD program (train.py here, with plain SGD) computes from deterministic parameters on
fixed synthetic batches. tests/test_mobilenet_ssd.py checks the migrated programs against it.

    .oracle-venv/bin/python examples/mobilenet_ssd/fluid/make_parity_data.py

Three runs: ``fluid``, and two that differ from it by float32 rounding only, whose differences
from it are fluid's own spread: ``fluid_reversed`` (the images of each batch in reverse order:
the batch reductions round differently) and ``fluid_ulp`` (every pixel moved by one float32 ulp,
as a differently rounded input or convolution would: reversing alone leaves the forward outputs
unchanged, so it underestimates how far a correct port may land). Each keeps
the step-0 head outputs and priors (``fluid`` only, in full), the step-0 loss, per trainable
parameter the gradient norm and a fixed subsample of gradient entries, the same subsample of the
parameters after the SGD step, the batch-norm running statistics after step 0 (in full), and
the losses of the STEPS steps. Parameters are not stored: synthetic_voc.deterministic_value
makes them, in creation order.
"""
import os
import sys

import numpy as np
import paddle.fluid as fluid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import synthetic_voc as data  # noqa: E402
from train import build_program, feed  # noqa: E402

OUT = os.path.join(HERE, "..", "..", "..", "tests", "data", "mobilenet_ssd")
BATCH_SIZE, STEPS, LEARNING_RATE, SEED = 2, 10, 0.001, 500


def perturb(batch, variant):
    if variant == "reversed":
        return data.reverse_batch(batch)
    if variant == "ulp":
        return dict(batch, image=np.nextafter(batch["image"], np.float32(np.inf)))
    return batch


def run(variant):
    startup, main = fluid.Program(), fluid.Program()
    outs = build_program(main, startup, True, lambda: fluid.optimizer.SGD(LEARNING_RATE))
    place = fluid.CPUPlace()
    exe = fluid.Executor(place)
    scope = fluid.global_scope()
    exe.run(startup)
    params = main.global_block().all_parameters()
    trainable = [p for p in params if p.trainable]
    stats = [p for p in params if not p.trainable]  # batch norm moving mean / variance
    for k, p in enumerate(trainable):
        scope.find_var(p.name).get_tensor().set(data.deterministic_value(k, p.shape), place)
    samples = [data.sample_indices(k, int(np.prod(p.shape))) for k, p in enumerate(trainable)]

    result = {"names": np.array([p.name for p in trainable]),
              "shapes": np.array([list(p.shape) + [0] * (4 - len(p.shape)) for p in trainable]),
              "stat_names": np.array([p.name for p in stats]), "losses": []}
    for step in range(STEPS):
        batch = data.make_batch(SEED + step, BATCH_SIZE, min_boxes=1)
        if step == 0:
            result["image_sum"] = np.float64(batch["image"].astype(np.float64).sum())
            result["gt_box"] = batch["gt_box"]
            result["lengths"] = np.array(batch["lengths"])
        fed = perturb(batch, variant)
        fetch = [outs["loss"]]
        if step == 0:
            fetch += [outs[k] for k in ("locs", "confs", "box", "box_var")]
            fetch += [p.name + "@GRAD" for p in trainable]
        values = exe.run(main, feed=feed(fed, place), fetch_list=fetch)
        result["losses"].append(float(np.asarray(values[0]).ravel()[0]))
        if step == 0:
            locs, confs, box, box_var = values[1:5]
            if variant == "reversed":
                locs, confs = locs[::-1], confs[::-1]
            result.update(locs=locs, confs=confs, box=box, box_var=box_var)
            grads = [np.asarray(g).ravel() for g in values[5:]]
            result["grad_norm"] = np.array([np.linalg.norm(g.astype(np.float64)) for g in grads])
            result["grad_sample"] = np.concatenate([g[s] for g, s in zip(grads, samples)])
            updated = [np.array(scope.find_var(p.name).get_tensor()).ravel() for p in trainable]
            result["param_sample"] = np.concatenate([u[s] for u, s in zip(updated, samples)])
            result["bn_stats"] = np.concatenate(
                [np.array(scope.find_var(p.name).get_tensor()).ravel() for p in stats])
            result["bn_stat_sizes"] = np.array([int(np.prod(p.shape)) for p in stats])
    result["losses"] = np.array(result["losses"])
    result["loss0"] = result["losses"][0]
    return result


def main():
    os.makedirs(OUT, exist_ok=True)
    plain = run("plain")
    np.savez_compressed(os.path.join(OUT, "fluid.npz"), **plain)
    print("losses", plain["losses"])
    for variant in ("reversed", "ulp"):
        other = run(variant)
        for key in ("locs", "confs"):  # the outputs only as their spread: the files stay small
            other[key + "_max_diff"] = np.abs(other.pop(key) - plain[key]).max()
        for key in ("box", "box_var", "gt_box"):
            del other[key]
        np.savez_compressed(os.path.join(OUT, "fluid_%s.npz" % variant), **other)
        print(variant, "losses spread", np.abs(other["losses"] - plain["losses"]))
        print(variant, "locs/confs spread", other["locs_max_diff"], other["confs_max_diff"])


if __name__ == "__main__":
    main()
