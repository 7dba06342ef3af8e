"""Runs the exported MobileNet-SSD inference model with Paddle Inference, without
paddle_ssd_op (the model holds Paddle's own operators only):

    python examples/mobilenet_ssd/infer.py MODEL_FILE PARAMS_FILE IMAGES.npy OUT.npy

writes the detections [No, 6] (label, score, xmin, ymin, xmax, ymax) of the images.
"""
import zlib  # noqa: F401  -- must precede paddle: paddle 2.6.2 exports a zlib that crashes Python's
import sys

import numpy as np
import paddle.inference as paddle_infer


def main(model_file, params_file, images_file, out_file):
    config = paddle_infer.Config(model_file, params_file)
    config.disable_gpu()
    config.disable_glog_info()
    # Paddle Inference's passes (conv + batch norm fusion) and its oneDNN kernels round
    # differently from the executor; on a little-trained net, near-tied scores then swap
    # detections. Without them it computes exactly what the eval program computed, which
    # train.py checks; drop these two lines for speed in production.
    config.switch_ir_optim(False)
    config.disable_mkldnn()
    predictor = paddle_infer.create_predictor(config)
    image = predictor.get_input_handle(predictor.get_input_names()[0])
    image.copy_from_cpu(np.load(images_file))
    predictor.run()
    out = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    assert "paddle_ssd_op" not in sys.modules
    np.save(out_file, out)


if __name__ == "__main__":
    main(*sys.argv[1:5])
