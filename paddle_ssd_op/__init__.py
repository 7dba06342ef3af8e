"""fluid 1.8's SSD layers for PaddlePaddle 2.6 and 3.x: ``ssd_loss`` as one fused C++ operator,
and ``multi_box_head`` / ``MultiBoxHead``, ``detection_output`` and ``DetectionMAP``, exact to
fluid 1.8.5.

Importing the package registers the operator ``fused_ssd_loss`` with Paddle (a saved model that
holds it imports the package by itself: paddle_ssd_op_autoload). The other layers are made of
Paddle's built-in operators, so a model saved with them runs without this package.
"""
import zlib  # noqa: F401  -- must precede paddle: paddle 2.6.2 exports a zlib that crashes Python's

from ._loader import load_op as _load_op

_load_op()

from . import cuda  # noqa: E402
from .detection_map import DetectionMAP  # noqa: E402
from .postprocess import detection_output  # noqa: E402
from .layers import ssd_loss  # noqa: E402
from .memory import empty_cache  # noqa: E402
from .head import MultiBoxHead, multi_box_head  # noqa: E402
from .threads import get_num_threads, set_num_threads  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ssd_loss", "multi_box_head", "MultiBoxHead", "detection_output", "DetectionMAP",
           "set_num_threads", "get_num_threads", "empty_cache", "cuda"]
