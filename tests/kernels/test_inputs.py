"""The kernels' shared input checks: one rule and one message for empirical and infinite kernels."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_ntk.kernels import empirical_nngp, empirical_ntk, infinite_kernels
from rnn_ntk.kernels.inputs import check_batches, check_lengths, check_x
from rnn_ntk.model import RNNConfig, init_params

CFG = RNNConfig(width=4, input_dim=2)
X = np.zeros((3, 4, 2))


def _calls():
    params = init_params(CFG, jax.random.key(0))
    return {"empirical_ntk": lambda **kw: empirical_ntk(CFG, params, **kw),
            "empirical_nngp": lambda **kw: empirical_nngp(CFG, params, **kw),
            "infinite_kernels": lambda **kw: infinite_kernels(CFG, **kw)}


BAD = [
    (dict(x1=X, lengths1=np.array([1.0, 2.0, 3.0])), "lengths1 must have an integer dtype"),
    (dict(x1=X, lengths1=[1.0, 2.0, 3.0]), "lengths1 must have an integer dtype"),
    (dict(x1=X, lengths1=np.array([True, True, True])), "lengths1 must have an integer dtype"),
    (dict(x1=X, lengths1=[1, 2]), r"lengths1 must have shape \(3,\)"),
    (dict(x1=X, lengths1=[0, 2, 4]), r"lengths1 must lie in \[1, 4\]"),
    (dict(x1=X, lengths1=[1, 5, 4]), r"lengths1 must lie in \[1, 4\]"),
    (dict(x1=X, x2=X[:2], lengths2=np.array([1.5, 2.0])), "lengths2 must have an integer dtype"),
    (dict(x1=X, lengths2=[1, 2, 3]), "lengths2 was given without x2"),
    (dict(x1=np.zeros((3, 4))), r"x1 must have shape \(n, T, d\)"),
    (dict(x1=np.zeros((0, 4, 2))), "x1 must have n >= 1 sequences"),
    (dict(x1=X, x2=np.zeros((2, 4, 3))), "x2 has token dimension 3, but cfg.input_dim is 2"),
]


@pytest.mark.parametrize("kw,msg", BAD)
def test_every_kernel_refuses_the_same_inputs_with_the_same_one_line_message(kw, msg):
    for name, call in _calls().items():
        with pytest.raises(ValueError, match=msg) as info:
            call(**kw)
        assert "\n" not in str(info.value), name


def test_integer_lengths_of_any_width_are_accepted_alike():
    for dt in (np.int8, np.int32, np.uint16, np.int64):
        n1, T1, l1, n2, T2, l2 = check_batches(X, None, np.array([1, 4, 2], dt), None, 2)
        assert (n1, T1, n2, T2) == (3, 4, 3, 4)
        assert l1.dtype == np.int32 and list(l1) == [1, 4, 2] and l2 is l1
    _, _, l1, _, _, l2 = check_batches(X, X[:2], None, jnp.asarray([3, 1]), 2)
    assert list(l1) == [4, 4, 4] and list(l2) == [3, 1]


def test_traced_lengths_are_checked_for_shape_and_dtype_only():
    @jax.jit
    def f(lengths):
        return check_lengths("lengths1", lengths, 3, 4)
    np.testing.assert_array_equal(f(jnp.asarray([1, 2, 9])), [1, 2, 9])   # values unknown: kept
    with pytest.raises(ValueError, match="integer dtype"):
        jax.jit(lambda l: check_lengths("lengths1", l, 3, 4))(jnp.asarray([1.0, 2.0, 3.0]))
    assert check_x("x1", jnp.zeros((2, 5, 3)), 3) == (2, 5)
