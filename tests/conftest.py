import zlib  # noqa: F401  -- must precede paddle: paddle 2.6.2 exports a zlib that crashes Python's

import pytest


@pytest.fixture(autouse=True)
def _dygraph_by_default():
    """Each test starts in dygraph mode, whatever the previous one left."""
    import paddle

    paddle.disable_static()
    yield
    paddle.disable_static()
