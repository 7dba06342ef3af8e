"""Checks of Python arguments shared by the layers: each casts a value to the type it becomes (an
int32 or float32 operator attribute, a bool), and each error names the argument, what was
expected and what was received. Also the questions every layer asks of a tensor in any mode."""
import numbers

import numpy as np
import paddle

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1


def is_tensor(x):
    """A dygraph Tensor, a legacy static Variable or a PIR Value."""
    types = [paddle.Tensor, paddle.static.Variable]
    if hasattr(paddle, "pir") and hasattr(paddle.pir, "Value"):
        types.append(paddle.pir.Value)
    return isinstance(x, tuple(types))


def dtype_name(x):
    """The dtype's name ('float32', ...) whatever the mode and Paddle version."""
    return str(x.dtype).split(".")[-1]


def known(*dims):
    """Whether dimensions of a static shape are known (None and -1 are not)."""
    return all(d is not None and d >= 0 for d in dims)


def in_pir_mode():
    in_pir = getattr(paddle.framework, "in_pir_mode", None)
    return bool(in_pir and in_pir())


def as_bool(name, value):
    """A bool; also the ints 0 and 1, which fluid took."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral)
                                               and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name}: expected a bool, received {type(value).__name__} {value!r}")


def as_int(name, value, minimum=INT32_MIN):
    """An int of at least `minimum` that fits the int32 attribute it becomes."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, received {type(value).__name__} {value!r}")
    if not minimum <= value <= INT32_MAX:
        raise ValueError(f"{name}: expected an int in [{minimum}, {INT32_MAX}], received "
                         f"{value!r}")
    return int(value)


def as_float32(name, value):
    """A number as the float32 an operator attribute holds: one that is not finite there (NaN,
    1e39, an int beyond float64) is refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, received {type(value).__name__} {value!r}")
    try:
        with np.errstate(over="ignore"):
            result = np.float32(value)
    except OverflowError:  # an int beyond float64
        result = np.float32(np.inf)
    if not np.isfinite(result):
        raise ValueError(f"{name}: expected a finite float32 number, received {value!r}")
    return result


def as_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, received {value!r}")
    return value


def check_prediction_shapes(loc_name, loc, conf_name, conf, prior_box):
    """The shapes of an SSD head's outputs, named as the calling layer names them: loc [N, Np, 4],
    conf [N, Np, C] with N, Np, C > 0, prior_box [Np, 4]. Dimensions unknown in a static program
    (-1) are left to the ops."""
    ls, cs, ps = list(loc.shape), list(conf.shape), list(prior_box.shape)
    if len(ls) != 3 or ls[2] != 4:
        raise ValueError(f"{loc_name}: expected shape [N, Np, 4], received {ls}")
    if len(cs) != 3 or any(known(a, b) and a != b for a, b in zip(cs[:2], ls[:2])):
        raise ValueError(f"{conf_name}: expected shape [N, Np, C] with N, Np of {loc_name} "
                         f"{ls[:2]}, received {cs}")
    if known(ls[0]) and ls[0] == 0:
        raise ValueError(f"{loc_name}: expected at least one image (N > 0), received shape {ls}")
    if known(ls[1]) and ls[1] == 0:
        raise ValueError(f"{loc_name}: expected at least one prior (Np > 0), received shape {ls}")
    if known(cs[2]) and cs[2] == 0:
        raise ValueError(f"{conf_name}: expected at least one class (C > 0), received shape {cs}")
    if len(ps) != 2 or ps[1] != 4 or (known(ps[0], ls[1]) and ps[0] != ls[1]):
        raise ValueError(f"prior_box: expected shape [Np, 4] = [{ls[1]}, 4], received {ps}")
