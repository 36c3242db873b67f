"""The built-in demo sweep (``rnn-ntk demo``)."""
from __future__ import annotations

from rnn_ntk.sweep.spec import Spec, parse_spec

__all__ = ["DEMO_SPEC", "demo_spec"]

DEMO_SPEC = """\
# rnn-ntk demo: memorising random labels with gradient descent, a few widths x seeds,
# training only W (the papers' setting) or all of W, U, b, v.
name = "demo"
description = "random labels (n = 32, T = 8, d = 4), full-batch GD, lr = 1"

[model]
width = [16, 32, 64, 128]
activation = "relu"
readout = "last"
trainable = [["W"], ["W", "U", "b", "v"]]

[task]
kind = "random_labels"
n_train = 32
n_test = 32
length = 8
input_dim = 4

[train]
optimizer = "sgd"
steps = 300
log_every = 10
lr = 1.0
dtype = "float32"

[sweep]
seeds = 3
pack_widths = "auto"
"""


def demo_spec() -> Spec:
    """The built-in demo sweep (``rnn-ntk demo``)."""
    return parse_spec(DEMO_SPEC, "<demo>")
