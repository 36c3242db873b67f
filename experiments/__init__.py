"""The papers' experiments, installed as the subpackage ``rnn_ntk.experiments``.

One module per experiment (``rnn_ntk.experiments.<name>``, plus ``<name>.toml`` where its training
runs are a sweep spec) following the protocol of :mod:`rnn_ntk.reproduce` (NAME, TITLE, run,
figures, claims); :mod:`rnn_ntk.experiments.protocol` holds what they share (the resume rule,
interval formatting). Run them with ``rnn-ntk reproduce NAME`` or ``python -m
rnn_ntk.experiments NAME`` (the same command).

The folder lives at the repository root (``experiments/``); ``rnn_ntk/experiments`` is a symbolic
link to it, so a source checkout, an editable install and a wheel all import it under this name.
Importing this package imports no experiment (they load jax).
"""
