"""The fluid 1.8 MobileNet-SSD training and evaluation program (PaddleCV/ssd train.py of
PaddlePaddle/models, release/1.8), on the synthetic VOC-like data of ../synthetic_voc.py:
RMSProp with piecewise learning-rate decay and L2 decay, ``fluid.layers.ssd_loss``; an eval
program (``clone(for_test=True)``) with ``fluid.layers.detection_output`` and
``fluid.metrics.DetectionMAP``; ``fluid.io.save_persistables`` / ``load_vars``. Batches are fed
as LoDTensors (the original's ``py_reader`` only moves the same tensors to a queue). Every image
has at least one box: fluid's ssd_loss aborts on an image without.

    .oracle-venv/bin/python examples/mobilenet_ssd/fluid/train.py --steps 300

Run with fluid 1.8.5 (Python 3.7). make_parity_data.py builds the same program with plain SGD.
"""
import argparse
import os
import shutil
import sys

import numpy as np
import paddle.fluid as fluid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mobilenet_ssd import mobilenet_ssd  # noqa: E402
from synthetic_voc import IMAGE_SHAPE, NUM_CLASSES, make_batch  # noqa: E402

EVAL_SEED = 10 ** 6  # eval batches use seeds from here on


def optimizer_setting(learning_rate, steps):
    boundaries = [int(steps * f) for f in (0.5, 0.75)]
    values = [learning_rate * f for f in (1, 0.5, 0.1)]
    return fluid.optimizer.RMSProp(
        learning_rate=fluid.layers.piecewise_decay(boundaries, values),
        regularization=fluid.regularizer.L2Decay(0.00005))


def build_program(main_prog, startup_prog, is_train, make_optimizer=None):
    """The train program (outputs: loss and the head) or the eval program (detections).
    ``make_optimizer()`` is called inside the program (its learning rate is a variable there)."""
    with fluid.program_guard(main_prog, startup_prog):
        with fluid.unique_name.guard():
            image = fluid.data("image", [None] + IMAGE_SHAPE, "float32")
            gt_box = fluid.data("gt_box", [None, 4], "float32", lod_level=1)
            gt_label = fluid.data("gt_label", [None, 1], "int32", lod_level=1)
            difficult = fluid.data("difficult", [None, 1], "int32", lod_level=1)
            locs, confs, box, box_var = mobilenet_ssd(image, NUM_CLASSES, IMAGE_SHAPE)
            if is_train:
                with fluid.unique_name.guard("train"):
                    loss = fluid.layers.ssd_loss(locs, confs, gt_box, gt_label, box, box_var)
                    loss = fluid.layers.reduce_sum(loss)
                    make_optimizer().minimize(loss)
                return {"loss": loss, "locs": locs, "confs": confs, "box": box,
                        "box_var": box_var}
            with fluid.unique_name.guard("inference"):
                nmsed_out = fluid.layers.detection_output(locs, confs, box, box_var,
                                                          nms_threshold=0.45)
                map_eval = fluid.metrics.DetectionMAP(
                    nmsed_out, gt_label, gt_box, difficult, NUM_CLASSES, overlap_threshold=0.5,
                    evaluate_difficult=False, ap_version="11point")
            return {"map_eval": map_eval, "nmsed_out": nmsed_out, "image": image}


def feed(batch, place, with_difficult=False):
    lod = [batch["lengths"]]
    result = {"image": batch["image"],
              "gt_box": fluid.create_lod_tensor(batch["gt_box"], lod, place),
              "gt_label": fluid.create_lod_tensor(batch["gt_label"], lod, place)}
    if with_difficult:
        result["difficult"] = fluid.create_lod_tensor(batch["difficult"], lod, place)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--eval-batches", type=int, default=10)
    parser.add_argument("--model-save-dir", default="mobilenet_ssd_fluid_model")
    parser.add_argument("--seed", type=int, default=111, help="of the initial parameters")
    args = parser.parse_args()

    startup_prog, train_prog, test_prog = fluid.Program(), fluid.Program(), fluid.Program()
    startup_prog.random_seed = args.seed   # as the original's --enable_ce
    train = build_program(train_prog, startup_prog, True,
                          lambda: optimizer_setting(args.learning_rate, args.steps))
    test = build_program(test_prog, startup_prog, False)
    test_prog = test_prog.clone(for_test=True)
    place = fluid.CPUPlace()
    exe = fluid.Executor(place)
    exe.run(startup_prog)

    for step in range(args.steps):
        batch = make_batch(step, args.batch_size, min_boxes=1)
        loss, = exe.run(train_prog, feed=feed(batch, place), fetch_list=[train["loss"]])
        if step % 10 == 0:
            print("step {:d}, loss {:.6f}".format(step, float(np.mean(loss))))

    map_eval = test["map_eval"]
    _, accum_map = map_eval.get_map_var()
    map_eval.reset(exe)
    for i in range(args.eval_batches):
        batch = make_batch(EVAL_SEED + i, args.batch_size, min_boxes=1)
        test_map, = exe.run(test_prog, feed=feed(batch, place, True), fetch_list=[accum_map])
    print("test mAP {:.8f}".format(float(test_map[0])))

    model_path = os.path.join(args.model_save_dir, "final")
    if os.path.isdir(model_path):
        shutil.rmtree(model_path)
    fluid.io.save_persistables(exe, model_path, main_program=train_prog)
    print("saved to", model_path)


if __name__ == "__main__":
    main()
