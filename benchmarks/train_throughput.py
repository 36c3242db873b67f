"""Throughput of the training engine (train_many) against a Python loop of jitted single runs.

    python benchmarks/train_throughput.py [--quick] [--devices N] [--layouts] [--progress] [--rows 1,3]

Rows (random_labels, d = 8, full-batch GD, float32): (m=64, T=20, n=256, 64 runs, 200 steps),
(m=32, T=10, n=32, 256 runs, 200 steps), (m=1024, T=10, n=64, 4 runs, 40 steps). Both sides run
the same ``make_train(cfg)`` program per run, after a warm-up call (compiles excluded); the ratio
is loop time / engine time (> 1: the engine is faster). ``cores`` gives the CPU seconds per wall
second of each side (process_time / wall time of one extra repetition): how busy each side keeps
the machine (the loop's single program shows more than one core through XLA's intra-op thread
pool, though much of that is waiting at small sizes). At m = 1024 the table also gives the
engine's FLOP rate, counting 6 n T m^2 flops per step (the recurrent matmuls of W: forward,
and the two of the backward pass), as a fraction of the rate of a single program doing the same
(n, m) x (m, m) matmuls back to back (3T per step). ``--layouts`` also times the other lane
layouts (the measurements behind train.choose_layout). Sets jax_num_cpu_devices (default: the
number of CPU cores) before jax initialises. ``--progress`` also times the default layout
with step progress reports (``train_many(..., progress=...)``): one host callback per log of
each run, one per run, and one per k logs (k from ``sweep.progress_every``, what ``rnn-ntk
run`` uses; 0 there means chunk-end reports only), and prints the overhead ratio
progress_s / plain_s (best and median of interleaved repetitions). The load average is printed
with the numbers, since other processes on a shared machine change them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small smoke run")
    p.add_argument("--devices", type=int, default=os.cpu_count() or 1,
                   help="host CPU devices (jax_num_cpu_devices)")
    p.add_argument("--layouts", action="store_true", help="also time the other lane layouts")
    p.add_argument("--progress", action="store_true",
                   help="also time the default layout with progress reports (overhead ratio)")
    p.add_argument("--rows", type=str, default="", help="comma-separated row numbers (1-based) to run")
    return p.parse_args()


def _progress_rows(cfg, keys, hp, lay, R, steps, log_every, reps) -> list[str]:
    """Time train_many with progress reports every log and every k logs (k from the sweep's
    rule, sweep.progress_every) against the plain program, interleaved (drifting load)."""
    import jax

    from rnn_ntk.sweep import progress_every
    from rnn_ntk.train import train_many
    count = [0]

    def on_progress(lanes, n):
        count[0] += len(lanes) * n

    def run(every):
        if every is None:
            return train_many(cfg, keys, hp, layout=lay)
        return train_many(cfg, keys, hp, layout=lay, progress=on_progress, progress_every=every)

    k = progress_every(cfg, jax.default_backend())   # 0: the sweep reports at chunk ends only
    n_logs = steps // log_every
    variants = [None] + sorted({1, n_logs} | ({k} if k else set()))
    for v in variants:
        jax.block_until_ready(run(v))
    times = {v: [] for v in variants}
    for _ in range(reps):
        for v in variants:
            count[0] = 0
            t = time.perf_counter()
            jax.block_until_ready(run(v))
            times[v].append(time.perf_counter() - t)
            assert v is None or count[0] == R * steps, (count[0], R * steps)
    import statistics
    plain, plain_med = min(times[None]), statistics.median(times[None])
    out = []
    for v in variants[1:]:
        n_calls = R * -(-(steps // log_every) // v)
        t, t_med = min(times[v]), statistics.median(times[v])
        rule = " (sweep rule)" if v == k else ""
        row = (f"  progress every {v} log(s){rule}: {n_calls} "
               f"callbacks, plain {plain:.2f} s (median {plain_med:.2f}), with progress "
               f"{t:.2f} s (median {t_med:.2f}), overhead ratio {t / plain:.3f} (of medians "
               f"{t_med / plain_med:.3f})")
        print(row, flush=True)
        out.append(row)
    if not k:
        row = "  (sweep rule: runs this short report only when their chunk ends: no overhead)"
        print(row, flush=True)
        out.append(row)
    return out


def main() -> None:
    args = _parse()
    jax.config.update("jax_num_cpu_devices", args.devices)   # before jax initialises a backend

    import jax.numpy as jnp
    import numpy as np

    from rnn_ntk.model import RNNConfig
    from rnn_ntk.tasks import TaskConfig
    from rnn_ntk.train import (Layout, TrainConfig, choose_layout, make_train, run_keys,
                               train_many)

    # (m, T, n, runs, steps, log_every)
    cases = [(64, 20, 256, 64, 200, 20), (32, 10, 32, 256, 200, 20), (1024, 10, 64, 4, 40, 40)]
    if args.quick:
        cases = [(64, 20, 256, 8, 40, 20), (32, 10, 32, 32, 40, 20), (256, 10, 64, 4, 20, 20)]
    if args.rows:
        cases = [cases[int(i) - 1] for i in args.rows.split(",")]
    d = 8

    def block(tree):
        return jax.block_until_ready(tree)

    def timed(f):
        t = time.perf_counter()
        f()
        return time.perf_counter() - t

    def cores_used(f):
        """CPU seconds of this process per wall second while f runs (1.0 = one busy core)."""
        c, t = time.process_time(), time.perf_counter()
        f()
        return (time.process_time() - c) / (time.perf_counter() - t)

    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {len(jax.devices())} devices, "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    header = (f"{'m':>5} {'T':>3} {'n':>4} {'runs':>5} {'steps':>5} {'loop_s':>8} {'engine_s':>9} "
              f"{'layout':<22} {'cores':>9} {'flop_frac':>9} {'ratio':>6}")
    rows = []
    for m, T, n, R, steps, log_every in cases:
        cfg = TrainConfig(RNNConfig(width=m, input_dim=d),
                          TaskConfig("random_labels", n_train=n, n_test=16, length=T, input_dim=d),
                          steps=steps, log_every=log_every)
        keys = run_keys(0, np.arange(R)[:, None])
        hp = {"lr": np.full((R,), 0.5, np.float32)}
        single = jax.jit(make_train(cfg))
        block(single(keys[0], {"lr": 0.5}))

        def loop():
            out = [single(keys[i], {"lr": 0.5}) for i in range(R)]
            block(out)

        layout = choose_layout(cfg, R)
        layouts = [layout]
        if args.layouts:
            D = min(len(jax.devices()), R)
            for alt in (Layout(1, "map", 1), Layout(D, "map", 1), Layout(D, "map", 4),
                        Layout(D, "vmap", 1)):
                if alt not in layouts:
                    layouts.append(alt)
        reps = 1 if args.quick else 2
        t_loop = min(timed(loop) for _ in range(reps))
        loop_cores = cores_used(loop)
        mm_rate = None
        if m >= 256:
            x = jax.random.normal(jax.random.key(1), (n, m), jnp.float32)
            q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(2), (m, m), jnp.float32))

            @jax.jit
            def chain(x, q):   # the 3T matmuls (n, m) x (m, m) of each step, back to back
                return jax.lax.fori_loop(0, 3 * T * steps, lambda i, h: h @ q, x)

            block(chain(x, q))
            t_mm = min(timed(lambda: block(chain(x, q))) for _ in range(3))
            mm_rate = 3 * T * steps * 2 * n * m * m / t_mm
        for lay in layouts:
            block(train_many(cfg, keys, hp, layout=lay))
            t_eng = min(timed(lambda: block(train_many(cfg, keys, hp, layout=lay)))
                        for _ in range(reps))
            eng_cores = cores_used(lambda: block(train_many(cfg, keys, hp, layout=lay)))
            frac = ""
            if mm_rate is not None:
                eng_rate = R * steps * 6 * n * T * m * m / t_eng
                frac = f"{eng_rate / mm_rate:.2f}"
            lay_s = f"{lay.n_devices}x{lay.strategy}" + (f"(b={lay.batch_size})"
                                                       if lay.strategy == "map" else "")
            row = (f"{m:>5} {T:>3} {n:>4} {R:>5} {steps:>5} {t_loop:>8.2f} {t_eng:>9.2f} "
                   f"{lay_s + ('' if lay == layout else ' [alt]'):<22} "
                   f"{f'{loop_cores:.2f}/{eng_cores:.2f}':>9} {frac:>9} "
                   f"{t_loop / t_eng:>6.2f}")
            rows.append(row)
            print(row, flush=True)
            if args.progress and lay == layout:
                rows += _progress_rows(cfg, keys, hp, lay, R, steps, log_every, 2 * reps + 1)
    print()
    print(header)
    for r in rows:
        print(r)
    print(f"load average at end {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min); "
          f"ratio = loop_s / engine_s; cores = CPU seconds per wall second, loop/engine")


if __name__ == "__main__":
    main()
