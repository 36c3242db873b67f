"""A small valid spec to vary in the sweep tests: ``parse(model=..., task=..., train=..., sweep_=...)``."""
from rnn_ntk import sweep

BASE = """
[model]
{model}
[task]
kind = "random_labels"
n_train = 6
n_test = 4
length = 4
input_dim = 3
{task}
[train]
steps = 4
log_every = 2
{train}
[sweep]
{sweep}
"""


def spec_text(model="width = 4", task="", train="", sweep_="seed = 0"):
    return BASE.format(model=model, task=task, train=train, sweep=sweep_)


def parse(**kw):
    return sweep.parse_spec(spec_text(**kw), "<test>")
