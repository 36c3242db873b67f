"""Wall-time overhead of mid-run checkpoints: a demo-sized sweep with checkpoint_every = K vs 0.

    python benchmarks/checkpoint_overhead.py [--steps 3000] [--every 1000] [--repeats 3]

The sweep is ``rnn-ntk demo``'s spec (24 runs: widths 16-128 x two trainable sets x 3 seeds,
random labels n = 32, T = 8, full-batch GD) with ``steps`` raised so that K = ``every`` cuts each
run into several segments (3000 steps, K = 1000: checkpoints at steps 1000 and 2000). Both
variants run in this process into fresh stores, first once each to compile their programs (the
single program for K = 0, the segment program for K > 0; reported apart), then ``repeats``
times alternately (the load of a shared machine drifts). Each timed run is ``run_sweep`` end to
end: planning, training, checkpoint saves (orbax, asynchronous, the last two kept), chunk
writes, checkpoint deletion and the store's consolidation. Printed: every time, the median and
best of each variant, and the overhead ratio median(K) / median(0) (target <= 1.05), with the
load average before and after. Sets jax_num_cpu_devices to the CPU count (as the CLI does).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000, help="training steps of every run")
    p.add_argument("--every", type=int, default=1000, help="checkpoint_every K of the timed side")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each variant")
    return p.parse_args()


def _spec(steps: int, every: int):
    from rnn_ntk.sweep import demo
    from rnn_ntk.sweep.spec import parse_spec
    text = demo.DEMO_SPEC.replace("steps = 300\n", f"steps = {steps}\ncheckpoint_every = {every}\n")
    assert text != demo.DEMO_SPEC
    return parse_spec(text, "<checkpoint_overhead>")


def main() -> None:
    args = _parse()
    import jax
    jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    from rnn_ntk import train
    from rnn_ntk.sweep import make_plan, run_sweep

    specs = {0: _spec(args.steps, 0), args.every: _spec(args.steps, args.every)}
    plan = make_plan(specs[args.every])
    cfg = plan.programs[0].cfg
    n_seg = len(train.segment_starts(cfg)) if train.segment_logs(cfg) else 1
    print(f"demo spec, {len(plan.runs)} runs, {len(plan.programs)} programs, "
          f"{len(plan.chunks)} chunks, {args.steps} steps, log_every {cfg.log_every}; "
          f"K = {args.every}: {n_seg} segments per run, "
          f"{max(0, n_seg - 2)} checkpoints per chunk; {len(jax.devices())} CPU devices")
    print(f"load average before: {os.getloadavg()}")
    root = tempfile.mkdtemp(prefix="ckpt_bench_")
    times: dict[int, list[float]] = {k: [] for k in specs}
    n = 0

    def once(K: int) -> float:
        nonlocal n
        n += 1
        t = time.perf_counter()
        run_sweep(specs[K], os.path.join(root, f"{K}-{n}"))
        return time.perf_counter() - t

    for K in specs:                                     # compile both programs
        print(f"first run (compiles), K = {K}: {once(K):.2f} s", flush=True)
    for r in range(args.repeats):
        order = list(specs) if r % 2 == 0 else list(specs)[::-1]
        for K in order:
            times[K].append(once(K))
            print(f"repeat {r}, K = {K}: {times[K][-1]:.2f} s", flush=True)
    med = {K: statistics.median(v) for K, v in times.items()}
    for K, v in times.items():
        print(f"K = {K}: median {med[K]:.2f} s, best {min(v):.2f} s over {len(v)} runs")
    print(f"overhead ratio median(K = {args.every}) / median(K = 0): "
          f"{med[args.every] / med[0]:.3f}  (best/best {min(times[args.every]) / min(times[0]):.3f};"
          f" target <= 1.05)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
