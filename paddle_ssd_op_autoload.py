"""Imports paddle_ssd_op when a saved model that holds its operator is loaded without it.

A model saved with the op (``paddle.jit.save``, ``save_inference_model``) names the op
``fused_ssd_loss``, which exists only once ``paddle_ssd_op`` is imported. Loaded in a process that
did not import it, Paddle 3.x crashes on the first call of a ``paddle.jit.load``-ed model and
fails with messages that name neither the op nor this package elsewhere (docs/errors.md).

So the package installs ``paddle_ssd_op_autoload.pth``, which imports this module at interpreter
start: it only adds an import hook (no Paddle, nothing else loaded). When ``paddle`` has been
imported, the hook wraps Paddle's model loaders (``paddle.jit.load``,
``paddle.static.load_inference_model``, ``paddle.inference.create_predictor``): before a model
is loaded, if its program file names the op, ``paddle_ssd_op`` is imported, which registers it.
``PADDLE_SSD_OP_NO_AUTOLOAD=1`` turns the hook off.
"""
import functools
import importlib.abc
import importlib.util
import os
import sys

OP_NAME = b"fused_ssd_loss"
PROGRAM_SUFFIXES = (".json", ".pdmodel")  # PIR and legacy program files


def _program_names_op(paths):
    for path in paths:
        try:
            with open(path, "rb") as f:
                if OP_NAME in f.read():
                    return True
        except (OSError, TypeError, ValueError):
            continue
    return False


def _load_op_for(paths_of):
    """Wraps a model loader: first imports paddle_ssd_op if the model's program needs it."""

    def wrap(loader):
        @functools.wraps(loader)
        def load(*args, **kwargs):
            if "paddle_ssd_op" not in sys.modules:
                try:
                    needed = _program_names_op(paths_of(*args, **kwargs))
                except Exception:  # an unusual call: the loader itself will judge it
                    needed = False
                if needed:
                    import paddle_ssd_op  # noqa: F401  -- registers the op
            return loader(*args, **kwargs)

        load.__paddle_ssd_op_autoload__ = True
        return load

    return wrap


def _jit_program_files(path, *args, **kwargs):
    return [str(path) + suffix for suffix in PROGRAM_SUFFIXES]


def _inference_program_files(path_prefix, *args, **kwargs):
    model_filename = kwargs.get("model_filename")
    if path_prefix is None:
        return []
    if model_filename:  # the older form: a directory and a file name in it
        return [os.path.join(str(path_prefix), model_filename)]
    return [str(path_prefix) + suffix for suffix in PROGRAM_SUFFIXES] + [
        os.path.join(str(path_prefix), "__model__")]


def _predictor_program_files(config, *args, **kwargs):
    files = [config.prog_file()]
    if config.model_dir():
        files.append(os.path.join(config.model_dir(), "__model__"))
    return files


def _wrap_loaders(paddle):
    for module, name, paths_of in (
            (paddle.jit, "load", _jit_program_files),
            (paddle.static, "load_inference_model", _inference_program_files),
            (paddle.inference, "create_predictor", _predictor_program_files)):
        loader = getattr(module, name, None)
        if loader is not None and not getattr(loader, "__paddle_ssd_op_autoload__", False):
            setattr(module, name, _load_op_for(paths_of)(loader))


class _AfterPaddleImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it lets the other finders find ``paddle`` and wraps the loaders
    once the package has run its ``__init__``."""

    def find_spec(self, name, path=None, target=None):
        if name != "paddle":
            return None
        sys.meta_path.remove(self)  # once: the other finders find the real package
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_wrap(module):
            exec_module(module)
            try:
                _wrap_loaders(module)
            except Exception:  # never stand between the user and Paddle
                pass

        spec.loader.exec_module = exec_then_wrap
        return spec


def install():
    if os.environ.get("PADDLE_SSD_OP_NO_AUTOLOAD") == "1":
        return
    if "paddle" in sys.modules:  # imported already (this module imported late by hand)
        _wrap_loaders(sys.modules["paddle"])
    elif not any(isinstance(f, _AfterPaddleImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterPaddleImport())


install()
