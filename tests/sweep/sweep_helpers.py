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


class FakeDevice:
    """A stand-in accelerator for planning tests: ``platform``, ``device_kind`` and
    ``memory_stats()`` returning ``stats`` (or raising it, when it is an exception)."""

    def __init__(self, stats, platform="gpu", kind="Fake GPU"):
        self.platform, self.device_kind, self._stats = platform, kind, stats

    def memory_stats(self):
        if isinstance(self._stats, Exception):
            raise self._stats
        return self._stats

    def __repr__(self):
        return f"FakeDevice({self.platform}, {self._stats!r})"


def host_available_bytes():
    """MemAvailable of /proc/meminfo, read independently of the cost model."""
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
