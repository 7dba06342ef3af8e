"""fluid/train.py migrated to Paddle 3.3 / 2.6 with paddle_ssd_op: the MobileNet-SSD static
training and evaluation program on the synthetic VOC-like data of synthetic_voc.py.

    python examples/mobilenet_ssd/train.py                     # 300 steps, then eval and export
    python examples/mobilenet_ssd/train.py --steps 4 --eval-batches 2    # the short form

It trains (RMSProp, piecewise learning-rate decay, L2 decay, ``paddle_ssd_op.ssd_loss``),
evaluates the mAP (``paddle_ssd_op.detection_output`` in an eval program, then
``paddle_ssd_op.DetectionMAP``), saves the parameters, reloads them into a fresh scope (same
mAP), exports an inference model without the loss, and runs that model with Paddle Inference
(infer.py, in a process that does not import paddle_ssd_op): the same detections. The eval
program, the saving and the loading avoid the PIR traps of docs/migration.md. Unlike fluid,
images may have no box (``--allow-empty``); by default every image has one, as for fluid.
"""
import zlib  # noqa: F401  -- must precede paddle: paddle 2.6.2 exports a zlib that crashes Python's
import argparse
import os
import subprocess
import sys

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np
import paddle_ssd_op
import paddle

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mobilenet_ssd import mobilenet_ssd  # noqa: E402
from synthetic_voc import IMAGE_SHAPE, NUM_CLASSES, make_batch  # noqa: E402

EVAL_SEED = 10 ** 6  # eval batches use seeds from here on


def optimizer_setting(learning_rate, steps):
    """fluid's RMSProp(piecewise_decay, L2Decay); the decay is a scheduler to step per batch."""
    boundaries = [int(steps * f) for f in (0.5, 0.75)]
    values = [learning_rate * f for f in (1, 0.5, 0.1)]
    schedule = paddle.optimizer.lr.PiecewiseDecay(boundaries, values)
    return paddle.optimizer.RMSProp(learning_rate=schedule,
                                    weight_decay=paddle.regularizer.L2Decay(0.00005))


def build_program(main_prog, startup_prog, is_train, make_optimizer=None):
    """The train program (outputs: loss and the head) or the eval program (detections).
    ``make_optimizer()`` is called inside the program, as in fluid."""
    with paddle.static.program_guard(main_prog, startup_prog):
        with paddle.utils.unique_name.guard():
            image = paddle.static.data("image", [None] + IMAGE_SHAPE, "float32")
            locs, confs, box, box_var = mobilenet_ssd(image, NUM_CLASSES, IMAGE_SHAPE)
            if is_train:
                # Only the train program takes the gt (the mAP is computed outside the eval
                # program: a PIR program must be fed every input it declares).
                gt_box = paddle.static.data("gt_box", [None, 4], "float32", lod_level=1)
                gt_label = paddle.static.data("gt_label", [None, 1], "int32", lod_level=1)
                with paddle.utils.unique_name.guard("train"):
                    loss = paddle_ssd_op.ssd_loss(locs, confs, gt_box, gt_label, box, box_var)
                    loss = paddle.sum(loss)
                    optimizer = make_optimizer()
                    _, params_grads = optimizer.minimize(loss)
                return {"loss": loss, "locs": locs, "confs": confs, "box": box,
                        "box_var": box_var, "optimizer": optimizer, "params_grads": params_grads}
            with paddle.utils.unique_name.guard("inference"):
                nmsed_out, rois_num = paddle_ssd_op.detection_output(
                    locs, confs, box, box_var, nms_threshold=0.45, return_rois_num=True)
            return {"nmsed_out": nmsed_out, "rois_num": rois_num, "image": image}


def for_test(program):
    """fluid's ``program.clone(for_test=True)``. A PIR program (Paddle 3) refuses for_test, and
    without it batch norm would keep normalizing by the batch: set ``is_test`` on its ops (what
    paddle.static.normalize_program does), in place, so the program's outputs stay valid."""
    if not paddle.framework.in_pir_mode():
        return program.clone(for_test=True)
    for block in program.blocks:
        for op in block.ops:
            if op.has_attr("is_test"):
                op.set_bool_attr("is_test", True)
    return program


def parameter_names(startup_prog):
    """Names of the program's persistable variables in creation order (the order of their
    initializers in the startup program): fluid's order. On Paddle 3 the names are fluid's too;
    on Paddle 2.6, ``nn.Conv2D`` numbers its parameters differently (conv2d_0, conv2d_2, ...),
    so a fluid checkpoint maps onto the program by this order."""
    names = []
    for op in startup_prog.global_block().ops:
        if paddle.framework.in_pir_mode():
            outputs = [op.attrs()["parameter_name"]] if op.name() == "builtin.set_parameter" \
                else []
        else:
            outputs = op.output_arg_names
        names += [n for n in outputs if n not in names]
    return names


def fluid_names(names):
    """fluid 1.8's names of the given parameters (in creation order): fluid numbered the
    layers of each kind (conv2d, batch_norm) 0, 1, 2, ... as it created them; Paddle 3 does too
    (the names are unchanged), Paddle 2.6's nn.Conv2D skips numbers."""
    layers, counts, result = {}, {}, []
    for name in names:
        layer, _, suffix = name.partition(".")
        if layer not in layers:
            kind = layer.rsplit("_", 1)[0]
            layers[layer] = "%s_%d" % (kind, counts.get(kind, 0))
            counts[kind] = counts.get(kind, 0) + 1
        result.append(layers[layer] + "." + suffix)
    return result


def load_fluid_checkpoint(dirname, main_prog, startup_prog):
    """Loads the parameters and batch-norm statistics of a ``fluid.io.save_persistables``
    directory (one file per variable) into the migrated program (in the current scope).
    ``paddle.static.load_program_state`` reads such a directory only in a legacy program, hence
    the OldIrGuard on Paddle 3."""
    if paddle.framework.in_pir_mode():
        with paddle.pir_utils.OldIrGuard():
            state = paddle.static.load_program_state(dirname)
    else:
        state = paddle.static.load_program_state(dirname)
    params = {p.name for p in main_prog.global_block().all_parameters()}
    ours = [n for n in parameter_names(startup_prog) if n in params]
    missing = [f for f in fluid_names(ours) if f not in state]
    if missing:
        raise ValueError("%s: not a fluid checkpoint of this program, it lacks %s"
                         % (dirname, missing[:3]))
    paddle.static.set_program_state(
        main_prog, {n: state[f] for n, f in zip(ours, fluid_names(ours))})


def feed(batch, place):
    lod = [batch["lengths"]]
    return {"image": batch["image"],
            "gt_box": paddle.base.create_lod_tensor(batch["gt_box"], lod, place),
            "gt_label": paddle.base.create_lod_tensor(batch["gt_label"], lod, place)}


def evaluate(exe, test_prog, test, batches):
    """mAP (11point, difficult boxes ignored) of the eval program over ``batches``; also the
    detections of each batch."""
    map_eval = paddle_ssd_op.DetectionMAP(NUM_CLASSES, overlap_threshold=0.5,
                                          evaluate_difficult=False, ap_version="11point")
    detections = []
    for batch in batches:
        out, rois_num = exe.run(test_prog, feed={"image": batch["image"]},
                                fetch_list=[test["nmsed_out"], test["rois_num"]],
                                return_numpy=False)   # a legacy program's out holds a LoD
        out, rois_num = np.array(out), np.array(rois_num)
        map_eval.update(out, batch["gt_box"], batch["gt_label"], detection_lengths=rois_num,
                        gt_lengths=batch["lengths"], difficult=batch["difficult"])
        detections.append(out)
    return map_eval.accumulate(), detections


def inference_model_files(prefix):
    """(model file, params file) of paddle.static.save_inference_model(prefix): .json for a
    PIR program, .pdmodel for a legacy one."""
    for model in (prefix + ".json", prefix + ".pdmodel"):
        if os.path.exists(model):
            return model, prefix + ".pdiparams"
    raise FileNotFoundError(prefix + ".json / .pdmodel")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--eval-batches", type=int, default=10)
    parser.add_argument("--allow-empty", action="store_true",
                        help="images with 0 to 5 boxes (fluid needed at least 1)")
    parser.add_argument("--model-save-dir", default="mobilenet_ssd_model")
    parser.add_argument("--seed", type=int, default=111, help="of the initial parameters")
    args = parser.parse_args(argv)
    min_boxes = 0 if args.allow_empty else 1
    paddle.enable_static()
    paddle.seed(args.seed)

    startup_prog, train_prog, test_prog = (paddle.static.Program(), paddle.static.Program(),
                                           paddle.static.Program())
    train = build_program(train_prog, startup_prog, True,
                          lambda: optimizer_setting(args.learning_rate, args.steps))
    test = build_program(test_prog, startup_prog, False)
    test_prog = for_test(test_prog)
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    exe.run(startup_prog)

    losses = []
    for step in range(args.steps):
        batch = make_batch(step, args.batch_size, min_boxes)
        loss, = exe.run(train_prog, feed=feed(batch, place), fetch_list=[train["loss"]])
        train["optimizer"]._learning_rate.step()   # fluid's piecewise_decay counted by itself
        losses.append(float(np.mean(loss)))
        if step % 10 == 0:
            print("step {:d}, loss {:.6f}".format(step, losses[-1]), flush=True)
    if args.steps:
        print("loss, first 10 steps {:.4f}, last 10 steps {:.4f}".format(
            np.mean(losses[:10]), np.mean(losses[-10:])))

    eval_batches = [make_batch(EVAL_SEED + i, args.batch_size, min_boxes)
                    for i in range(args.eval_batches)]
    test_map, detections = evaluate(exe, test_prog, test, eval_batches)
    print("test mAP {:.4f}".format(test_map))

    # Save, then reload into a fresh scope: the same mAP.
    os.makedirs(args.model_save_dir, exist_ok=True)
    params_path = os.path.join(args.model_save_dir, "final")
    paddle.static.save(train_prog, params_path)
    with paddle.static.scope_guard(paddle.static.Scope()):
        exe.run(startup_prog)   # fresh parameters, then the saved ones
        paddle.static.load(train_prog, params_path, exe)
        reloaded_map, _ = evaluate(exe, test_prog, test, eval_batches)
    print("reloaded mAP {:.4f}".format(reloaded_map))
    assert reloaded_map == test_map, (reloaded_map, test_map)

    # Export the eval program (image -> detections, no loss) and run it with Paddle Inference.
    prefix = os.path.join(args.model_save_dir, "inference", "mobilenet_ssd")
    paddle.static.save_inference_model(prefix, [test["image"]], [test["nmsed_out"]], exe,
                                       program=test_prog)
    model_file, params_file = inference_model_files(prefix)
    images = os.path.join(args.model_save_dir, "eval_images.npy")
    np.save(images, eval_batches[0]["image"])
    result = os.path.join(args.model_save_dir, "inference_out.npy")
    subprocess.run([sys.executable, os.path.join(HERE, "infer.py"), model_file, params_file,
                    images, result], check=True)
    expected = detections[0]
    got = np.load(result)
    np.testing.assert_array_equal(got, expected)
    print("Paddle Inference: {} detections, as the eval program".format(len(got)))
    return {"losses": losses, "map": test_map}


if __name__ == "__main__":
    main()
