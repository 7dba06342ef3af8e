"""A detector's inference model — backbone, multi_box_head, detection_output, no loss — saved from
a static program and run by Paddle Inference (paddle.inference) in a process that never imports
paddle_ssd_op: both layers are made of Paddle's built-in operators."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest

import paddle_ssd_op

CPU = paddle.CPUPlace()
NUM_CLASSES = 5

PREDICT = textwrap.dedent("""\
    import zlib  # before paddle: paddle 2.6.2 exports a zlib that crashes Python's
    import glob, sys
    import numpy as np
    from paddle import inference

    program = (glob.glob("detector.json") + glob.glob("detector.pdmodel"))[0]
    config = inference.Config(program, "detector.pdiparams")
    config.disable_gpu()
    predictor = inference.create_predictor(config)
    feeds = np.load("feeds.npz")
    for name in predictor.get_input_names():
        predictor.get_input_handle(name).copy_from_cpu(feeds[name])
    predictor.run()
    outputs = [predictor.get_output_handle(name).copy_to_cpu()
               for name in predictor.get_output_names()]
    np.savez("predicted.npz", *outputs)
    assert "paddle_ssd_op" not in sys.modules
    """)


def build_detector(score_threshold):
    """image [N, 3, 64, 64] -> two feature maps -> head -> detections and rows per image."""
    image = paddle.static.data("image", [-1, 3, 64, 64], "float32")
    conv1 = paddle.nn.Conv2D(3, 8, 3, stride=8, padding=1)    # [N, 8, 8, 8]
    conv2 = paddle.nn.Conv2D(8, 8, 3, stride=2, padding=1)    # [N, 8, 4, 4]
    f1 = paddle.nn.functional.relu(conv1(image))
    f2 = paddle.nn.functional.relu(conv2(f1))
    locs, confs, boxes, variances = paddle_ssd_op.multi_box_head(
        [f1, f2], image, base_size=64, num_classes=NUM_CLASSES, aspect_ratios=[[2.], [2., 3.]],
        min_sizes=[16., 32.], max_sizes=[32., 56.], clip=True)
    out, rois_num = paddle_ssd_op.detection_output(locs, confs, boxes, variances,
                                                   score_threshold=score_threshold, keep_top_k=20,
                                                   return_rois_num=True)
    return image, out, rois_num


@pytest.mark.parametrize("empty", [False, True], ids=["detections", "empty_batch"])
def test_detector_runs_in_paddle_inference_without_the_package(tmp_path, empty):
    paddle.seed(7)
    rng = np.random.default_rng(7)
    images = rng.uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
    main, startup = paddle.static.Program(), paddle.static.Program()
    paddle.enable_static()
    try:
        with paddle.static.program_guard(main, startup):
            # no probability is above 1: nothing survives, fluid's [[-1]]
            image, out, rois_num = build_detector(1.0 if empty else 0.2)
        exe = paddle.static.Executor(CPU)
        exe.run(startup)
        expected_out, expected_rois = exe.run(main, feed={"image": images},
                                              fetch_list=[out, rois_num], return_numpy=False)
        expected_out, expected_rois = np.array(expected_out), np.array(expected_rois)
        paddle.static.save_inference_model(str(tmp_path / "detector"), [image], [out, rois_num],
                                           exe, program=main)
    finally:
        paddle.disable_static()
    if empty:
        assert expected_out.tolist() == [[-1.0]] and expected_rois.tolist() == [0, 0]
    else:
        assert expected_out.shape[1] == 6 and expected_rois.sum() == expected_out.shape[0] > 0
    np.savez(tmp_path / "feeds.npz", image=images)
    (tmp_path / "predict.py").write_text(PREDICT)
    proc = subprocess.run([sys.executable, "predict.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, PADDLE_SSD_OP_NO_AUTOLOAD="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    predicted = np.load(tmp_path / "predicted.npz")
    got_out, got_rois = predicted["arr_0"], predicted["arr_1"]
    np.testing.assert_array_equal(got_rois, expected_rois)
    assert got_out.shape == expected_out.shape
    if expected_out.shape[1] == 6:
        np.testing.assert_array_equal(got_out[:, 0], expected_out[:, 0])  # labels, row order
        # Paddle Inference's CPU softmax may round the scores one float32 step apart
        np.testing.assert_allclose(got_out, expected_out, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(got_out, expected_out)
