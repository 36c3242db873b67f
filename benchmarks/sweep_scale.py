"""Sweeps at scale, measured here and projected: plan 10^5 runs, run a 10^3-run slice.

    python benchmarks/sweep_scale.py [--seeds 1000] [--slice-seeds 10] [--steps 100] [--out DIR]

1. Planning: the spec 10 widths x 10 learning rates x ``--seeds`` seeds (10^5 runs at 1000) is
   parsed and planned (``make_plan``: runs, buckets, width packing, chunks) and dealt to 64 shards
   (``sweep.assignment``); wall time and peak traced Python memory (tracemalloc) of each step,
   and the process's peak RSS. Target: planning 10^5 runs <= 10 s.
2. A slice of the same sweep (``--slice-seeds`` seeds: 10^3 runs at 10) is run into a fresh store
   on the local devices: runs/s over the whole run (compiles included) and over the chunks after
   each program's first (steady state, from the chunk timings in the manifests); store bytes per
   run (chunk files, and chunk files + the consolidated results.zarr) against the raw float32
   bytes of the records (each recorded entry at 4 bytes). Target: <= 2x.
3. Projection: wall time and store size of the full sweep on H hosts x D devices from the
   measured steady-state rate per device and compile time per program (every host compiles every
   program its shards touch: at most all of them), printed as a small table.

Everything printed is measured in this run (plus the machine's load average); nothing is
compared against stored numbers.
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPEC = """
name = "scale"
[model]
width = [8, 16, 24, 32, 40, 48, 56, 64, 72, 80]
[task]
kind = "random_labels"
n_train = 16
n_test = 8
length = 8
input_dim = 3
[train]
steps = {steps}
log_every = 10
lr = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
dtype = "float32"
[sweep]
seeds = {seeds}
{extra}
"""


def measured(fn):
    """(result, Timed wall/CPU seconds, peak traced bytes) of fn(): timed alone, then run again under
    tracemalloc for its memory (tracing slows allocation-heavy code several-fold)."""
    gc.collect()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    del out
    gc.collect()
    tracemalloc.start()
    out = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, Timed(wall, cpu), peak


class Timed(float):
    """Wall seconds (the float) with the process's CPU seconds beside them (``cpu``): on a
    shared machine, CPU time is what a quiet machine's wall time would be (one thread)."""

    def __new__(cls, wall: float, cpu: float) -> "Timed":
        obj = super().__new__(cls, wall)
        obj.cpu = cpu
        return obj

    def __format__(self, spec: str) -> str:
        return f"{format(float(self), spec)} (CPU {format(self.cpu, spec)})"


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else (f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h")


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=1000, help="seeds of the planned sweep")
    ap.add_argument("--slice-seeds", type=int, default=10, help="seeds of the slice that runs")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--chunk-size", type=int, default=100,
                    help="lanes per chunk of the slice (several chunks per program, so that the "
                         "steady state can be told from compiling)")
    ap.add_argument("--out", help="where the slice's store goes (default: a temporary folder)")
    args = ap.parse_args()

    from rnn_ntk.cli import setup_jax
    setup_jax()
    import jax

    from rnn_ntk import store, sweep
    sweep.make_plan    # import the planner before timing
    print(f"# sweep_scale: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{os.getloadavg()[0]:.1f}, {len(jax.devices())} {jax.devices()[0].platform} device(s), "
          f"jax {jax.__version__}")

    # 1. planning
    text = SPEC.format(steps=args.steps, seeds=args.seeds, extra="")
    spec, t_parse, m_parse = measured(lambda: sweep.parse_spec(text, "<scale>"))
    runs, t_exp, m_exp = measured(lambda: sweep.expand_runs(spec))
    del runs
    plan, t_plan, m_plan = measured(lambda: sweep.make_plan(spec))
    rec, t_shard, m_shard = measured(lambda: sweep.assignment(plan, 64))
    n = len(plan.runs)
    print(f"planning {n} runs: parse {t_parse:.2f} s ({mib(m_parse)}), expand_runs alone "
          f"{t_exp:.2f} s ({mib(m_exp)}), make_plan {t_plan:.2f} s (peak traced {mib(m_plan)}; "
          f"{len(plan.programs)} programs, {len(plan.chunks)} chunks), 64-shard assignment "
          f"{t_shard:.2f} s ({mib(m_shard)}); process peak RSS "
          f"{mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}")
    tot = Timed(t_parse + t_plan, t_parse.cpu + t_plan.cpu)
    print(f"target planning <= 10 s: wall {'met' if tot <= 10 else 'MISSED'}, CPU "
          f"{'met' if tot.cpu <= 10 else 'MISSED'} ({tot:.2f} s parse + plan)")
    n_programs_full = len(plan.programs)
    del plan, rec

    # 2. the slice
    slice_text = SPEC.format(steps=args.steps, seeds=args.slice_seeds,
                             extra=f"chunk_size = {args.chunk_size}")
    sspec = sweep.parse_spec(slice_text, "<slice>")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "slice"
        compiles: list[float] = []

        def on_compile(event: str, duration: float, **kw) -> None:
            if event == "/jax/core/compile/backend_compile_duration":
                compiles.append(duration)

        jax.monitoring.register_event_duration_secs_listener(on_compile)
        t, c = time.perf_counter(), time.process_time()
        try:
            summary = sweep.run_sweep(sspec, out)
        finally:
            jax.monitoring.unregister_event_duration_listener(on_compile)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        mans = store.list_chunks(out)
        first = {}
        for m in sorted(mans, key=lambda m: m["path"]):
            first.setdefault(m["info"]["program"], m["name"])
        steady = [m for m in mans if first[m["info"]["program"]] != m["name"]]
        s_runs = sum(len(m["runs"]) for m in steady)
        s_sec = sum(m["info"]["seconds"] for m in steady)
        n_prog = len({m["info"]["program"] for m in mans})
        raw = 0
        for m in mans:
            with np.load(Path(m["path"]) / store.DATA) as z:
                raw += sum(z[k].size * 4 for k in z.files)
        chunk_bytes = dir_bytes(out / store.CHUNKS)
        res_bytes = dir_bytes(out / store.RESULTS)
        nr = summary.n_runs
        D = len(jax.devices())
        rate = s_runs / s_sec if s_sec else float("nan")
        comp = sum(compiles) / n_prog
        # compiles are timed in wall seconds; their CPU share is estimated at the process's
        # CPU / wall ratio over the slice (on a loaded machine wall >> CPU)
        comp_cpu = sum(compiles) * min(1.0, cpu / wall)
        cpu_rate = nr / max(cpu - comp_cpu, 1e-9)          # runs per CPU second, compiles out
        print(f"slice of {nr} runs ({summary.n_trained} trained, {len(mans)} chunks, "
              f"{n_prog} programs) on {D} devices: wall {wall:.1f} s (process CPU {cpu:.1f} s) "
              f"= {nr / wall:.1f} runs/s overall; steady state (chunks after each program's "
              f"first) {rate:.1f} runs/s = {rate / D:.2f} runs/s per device; XLA compiles "
              f"{sum(compiles):.1f} s ({len(compiles)} compiles, {comp:.1f} s per program); "
              f"{cpu_rate:.2f} runs per CPU second (a quiet core's rate)")
        print(f"store per run: chunks {chunk_bytes / nr:.0f} B, chunks + results.zarr "
              f"{(chunk_bytes + res_bytes) / nr:.0f} B; raw float32 records {raw / nr:.0f} B "
              f"-> {chunk_bytes / raw:.2f}x (chunks), {(chunk_bytes + res_bytes) / raw:.2f}x "
              f"(with results.zarr); target <= 2x: "
              f"{'met' if chunk_bytes + res_bytes <= 2 * raw else 'MISSED'}")

    # 3. projection of the full sweep
    per_dev = rate / D
    full_store = (chunk_bytes + res_bytes) / nr * n
    print(f"\nprojection for {n} runs ({n_programs_full} programs, compiled on every host: "
          f"{n_programs_full} x {comp:.1f} s wall, {comp_cpu / n_prog:.1f} s CPU; store {mib(full_store)} in total, "
          f"{mib(chunk_bytes / nr * n)} of it chunks), at {per_dev:.2f} runs/s per device as "
          f"measured here (load {os.getloadavg()[0]:.0f}) and at {cpu_rate:.2f} runs/s per "
          f"device from CPU time (a device = a quiet core):")
    print("| hosts H | devices per host D | wall, measured rate | wall, CPU-time rate |")
    print("|---|---|---|---|")
    for H in (1, 8, 64):
        for Dh in (1, 8):
            walls = [n_programs_full * c + n / (r * H * Dh)
                     for r, c in ((per_dev, comp), (cpu_rate, comp_cpu / n_prog))]
            print(f"| {H} | {Dh} | {fmt_s(walls[0])} | {fmt_s(walls[1])} |")


if __name__ == "__main__":
    main()
