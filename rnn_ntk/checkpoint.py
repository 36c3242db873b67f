"""Mid-run checkpoints of a running chunk (orbax-checkpoint): lane states saved between segments.

    ckpt = ChunkCheckpoint(checkpoint_dir(out, chunk.name), identity)   # what the chunk is
    records = train_many(cfg, keys, hparams, checkpoint=ckpt)           # resumes if one is saved
    ... write the chunk ...; ckpt.delete()

A sweep whose ``[train] checkpoint_every = K`` is > 0 runs each chunk as segments of
ceil(K / log_every) logs (:func:`rnn_ntk.train.make_segment`); after every segment but the last,
:func:`rnn_ntk.lanes.train_many` calls :meth:`ChunkCheckpoint.save` with the lanes' state
(:class:`rnn_ntk.train.RunState` of every lane: parameters, optimiser states, the linearised
model, the epoch order; the step is the segment index) and the records so far. Layout::

    OUT/.checkpoints/<chunk>/chunk.json     the chunk's identity (spec hash, chunk name, program,
                                            run indices, lanes), written before the first save
    OUT/.checkpoints/<chunk>/<step>/        one orbax checkpoint per saved step: 'state' (the
                                            flattened RunState leaves, as sharded on the devices)
                                            'records' (numpy, (lanes, n_logs) each), 'meta' (JSON)

Orbax writes each checkpoint into a temporary directory and renames it when complete (its atomic
finalize), so a process killed while saving leaves the previous checkpoint intact; the last two
are kept (``KEEP``). Saves are asynchronous: the next segment trains while the previous state is
written (every save waits for the one before). A restore refuses (one-line
:class:`CheckpointError`, a :class:`rnn_ntk.store.StoreError`) a checkpoint whose identity or
lanes (config, keys, hyper-parameters, segment length) differ from the chunk's, naming what
differs. ``rnn_ntk.sweep.execute`` deletes a chunk's checkpoints once the chunk is written.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from rnn_ntk import store

__all__ = ["CHECKPOINTS", "CHUNK_INFO", "KEEP", "CheckpointError", "ChunkCheckpoint",
           "checkpoint_dir", "saved_chunks", "remove_checkpoints"]

CHECKPOINTS = ".checkpoints"
CHUNK_INFO = "chunk.json"
KEEP = 2


class CheckpointError(store.StoreError):
    """A saved checkpoint cannot be used for this chunk (made under another spec, chunk or
    lanes). The message is one line."""


def checkpoint_dir(out_dir: str | os.PathLike, chunk: str) -> Path:
    """The checkpoint directory of chunk ``chunk`` of the store ``out_dir``."""
    return Path(out_dir) / CHECKPOINTS / chunk


def saved_chunks(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The identities (``chunk.json``) of the chunks of ``out_dir`` holding a checkpoint, sorted
    by chunk name; directories without a finished checkpoint are left out."""
    base = Path(out_dir) / CHECKPOINTS
    out = []
    if not base.is_dir():
        return out
    for d in sorted(base.iterdir()):
        info = d / CHUNK_INFO
        if not info.is_file() or not any(p.is_dir() and p.name.isdigit() for p in d.iterdir()):
            continue
        try:
            out.append(json.loads(info.read_text()))
        except (OSError, ValueError):
            continue
    return out


def remove_checkpoints(out_dir: str | os.PathLike, chunks: list[str]) -> int:
    """Delete the checkpoints of the named chunks (e.g. chunks already written); returns how
    many directories were removed."""
    n = 0
    for name in chunks:
        d = checkpoint_dir(out_dir, name)
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n


class ChunkCheckpoint:
    """The checkpoints of one chunk (an orbax ``CheckpointManager`` over its directory).

    Args:
      directory: the chunk's checkpoint directory (:func:`checkpoint_dir`).
      identity: JSON-able facts the checkpoint must match to be used (e.g. spec hash, chunk
        name, program id, run indices); written to ``chunk.json`` and into every save's meta.
      keep: how many checkpoints to keep (the newest).
    """

    def __init__(self, directory: str | os.PathLike, identity: Mapping[str, Any], *,
                 keep: int = KEEP) -> None:
        self.directory = Path(directory).absolute()
        self.identity = json.loads(json.dumps(dict(identity)))   # as it reads back
        self.keep = keep
        self._manager: Any = None

    # orbax is imported on first use (it is slow to import and only checkpointed runs need it)
    def _mngr(self) -> Any:
        if self._manager is None:
            import orbax.checkpoint as ocp
            self.directory.mkdir(parents=True, exist_ok=True)
            opts = ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True,
                                                cleanup_tmp_directories=True,
                                                enable_async_checkpointing=True)
            self._manager = ocp.CheckpointManager(self.directory, options=opts)
        return self._manager

    def steps(self) -> list[int]:
        """The saved (finished) checkpoints' steps, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(self._mngr().all_steps())

    def restore(self, like: Mapping[str, Any], meta: Mapping[str, Any]
                ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The newest saved checkpoint as (its meta, tree shaped as ``like``), or None if none.

        Args:
          like: {'state': pytree of jax.ShapeDtypeStruct (with shardings), 'records': name ->
            numpy array}: the structure to restore into.
          meta: the lanes' fingerprint: each entry (and the identity's) must equal the saved
            one (the saved meta's other entries, e.g. 'step' and 'segment', are returned).

        Raises:
          CheckpointError: the checkpoint belongs to another chunk, spec or lanes.
        """
        steps = self.steps()
        if not steps:
            return None
        import orbax.checkpoint as ocp
        step = steps[-1]
        mngr = self._mngr()
        saved = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        want = json.loads(json.dumps({**self.identity, **meta}))
        diff = sorted(k for k in want if saved.get(k) != want[k])
        if diff:
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} was made for another chunk or spec "
                f"(differs: {', '.join(diff)}); delete {self.directory} to start the chunk over")
        leaves, treedef = jax.tree.flatten(like["state"])
        target = {"state": {f"{i:05d}": a for i, a in enumerate(leaves)},
                  "records": dict(like["records"])}
        tree = mngr.restore(step, args=ocp.args.Composite(
            data=ocp.args.StandardRestore(target)))["data"]
        state = jax.tree.unflatten(treedef, [tree["state"][f"{i:05d}"]
                                             for i in range(len(leaves))])
        return dict(saved), {"state": state, "records": dict(tree["records"])}

    def save(self, step: int, tree: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """Save ``tree`` = {'state': pytree of arrays, 'records': name -> numpy} as checkpoint
        ``step`` with ``meta`` (JSON-able; the identity is added) (asynchronously; the arrays are copied first, so the caller may reuse its
        buffers); the oldest beyond ``keep`` are deleted once it is finished."""
        import orbax.checkpoint as ocp
        mngr = self._mngr()
        info = self.directory / CHUNK_INFO
        if not info.exists():
            store._write_json_atomic(info, self.identity)
        leaves = jax.tree.leaves(tree["state"])
        data = {"state": {f"{i:05d}": a for i, a in enumerate(leaves)},
                "records": {k: np.array(a, copy=True) for k, a in tree["records"].items()}}
        mngr.save(int(step), args=ocp.args.Composite(
            data=ocp.args.StandardSave(data),
            meta=ocp.args.JsonSave({**self.identity, **dict(meta), "step": int(step)})))

    def wait(self) -> None:
        """Block until the last save is finished on disk."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager (the checkpoints stay)."""
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None

    def delete(self) -> None:
        """Finish pending saves, then delete every checkpoint of the chunk (its directory)."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "ChunkCheckpoint":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
