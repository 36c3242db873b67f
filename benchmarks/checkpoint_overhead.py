"""Wall-time overhead of mid-run checkpoints: a demo-sized sweep with checkpoint_every = K vs 0.

    python benchmarks/checkpoint_overhead.py [--steps 3000] [--every 1000] [--repeats 2] [--seeds 3]

The sweep is ``rnn-ntk demo``'s spec (24 runs: widths 16-128 x two trainable sets x 3 seeds,
random labels n = 32, T = 8, full-batch GD) with ``steps`` raised so that K = ``every`` cuts each
run into several segments (3000 steps, K = 1000: checkpoints at steps 1000 and 2000). Both
variants run in this process into fresh stores, first once each to compile their programs (the
single program for K = 0, the segment program for K > 0; reported apart), then ``repeats``
times alternately (the load of a shared machine drifts). Each timed run is ``run_sweep`` end to
end: planning, training, checkpoint saves (orbax, asynchronous, the last two kept), chunk
writes, checkpoint deletion and the store's consolidation. Printed: every time, the median and
best of each variant, and the overhead ratio median(K) / median(0) (target <= 1.05) of wall
time and of the process's CPU time (less sensitive to other jobs on a shared machine), with the
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
    p.add_argument("--repeats", type=int, default=2, help="timed runs of each variant")
    p.add_argument("--seeds", type=int, default=3, help="seeds of the demo spec (3: 24 runs)")
    return p.parse_args()


def _spec(steps: int, every: int, seeds: int):
    from rnn_ntk.sweep import demo
    from rnn_ntk.sweep.spec import parse_spec
    text = demo.DEMO_SPEC.replace("steps = 300\n", f"steps = {steps}\ncheckpoint_every = {every}\n")
    text = text.replace("seeds = 3\n", f"seeds = {seeds}\n")
    assert text.count("checkpoint_every") == 1 and f"seeds = {seeds}" in text
    return parse_spec(text, "<checkpoint_overhead>")


def main() -> None:
    args = _parse()
    import jax
    jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    from rnn_ntk import train
    from rnn_ntk.sweep import make_plan, run_sweep

    specs = {0: _spec(args.steps, 0, args.seeds),
             args.every: _spec(args.steps, args.every, args.seeds)}
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
    cpu: dict[int, list[float]] = {k: [] for k in specs}
    n = 0

    def once(K: int) -> tuple[float, float]:
        nonlocal n
        n += 1
        t, c = time.perf_counter(), time.process_time()
        run_sweep(specs[K], os.path.join(root, f"{K}-{n}"))
        return time.perf_counter() - t, time.process_time() - c

    for K in specs:                                     # compile both programs
        w, c = once(K)
        print(f"first run (compiles), K = {K}: {w:.2f} s wall, {c:.2f} s CPU", flush=True)
    for r in range(args.repeats):
        order = list(specs) if r % 2 == 0 else list(specs)[::-1]
        for K in order:
            w, c = once(K)
            times[K].append(w)
            cpu[K].append(c)
            print(f"repeat {r}, K = {K}: {w:.2f} s wall, {c:.2f} s CPU "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    med = {K: statistics.median(v) for K, v in times.items()}
    med_cpu = {K: statistics.median(v) for K, v in cpu.items()}
    for K, v in times.items():
        print(f"K = {K}: median {med[K]:.2f} s, best {min(v):.2f} s wall over {len(v)} runs; "
              f"median {med_cpu[K]:.2f} s CPU")
    print(f"overhead ratio median(K = {args.every}) / median(K = 0): "
          f"{med[args.every] / med[0]:.3f} wall (best/best "
          f"{min(times[args.every]) / min(times[0]):.3f}), {med_cpu[args.every] / med_cpu[0]:.3f}"
          f" CPU time; target <= 1.05")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
