"""Benchmark: structured vs jacobian empirical NTK (rnn_ntk.kernels.empirical).

    python benchmarks/kernels.py            # timings, memory at m=4096, scaling exponents
    python benchmarks/kernels.py --quick    # fewer sizes and repeats
    python benchmarks/kernels.py --full     # also run the n=512, T=50, m=4096 'last' case

Everything is float32, readout 'last', all groups trainable, relu, one output, compared within
the same run. Times are the best of several calls after a warm-up call (compilation excluded).
Memory: XLA's compiled memory analysis (arguments + outputs + temporaries) of the whole jitted
kernel computation, and, in a fresh subprocess per method, the growth of the peak RSS during the
kernel call. At the end, benchmarks/kernels_infinite.py's main() runs if that file exists.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rnn_ntk.kernels import empirical as emp  # noqa: E402
from rnn_ntk.model import RNNConfig, init_params  # noqa: E402

D = 8
NT_REFERENCE_MS = {"neural-tangents best method": 230.0, "neural-tangents default": 723.0}


def _problem(m: int, n: int, T: int):
    cfg = RNNConfig(width=m, input_dim=D, readout="last", sigma_w=1.2, sigma_b=0.1)
    params = init_params(cfg, jax.random.key(0), jnp.float32)
    x = jax.random.normal(jax.random.key(1), (n, T, D), jnp.float32)
    return cfg, params, x


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _time(method: str, m: int, n: int, T: int, repeats: int, cpu: list | None = None) -> float:
    """Best wall time of ``repeats`` calls; with ``cpu`` (a list), appends the process CPU seconds
    of that best call (CPU / wall > 1: XLA ran threads in parallel; < 1: the process waited)."""
    cfg, params, x = _problem(m, n, T)
    emp.empirical_ntk(cfg, params, x, method=method).block_until_ready()
    best, best_cpu = float("inf"), 0.0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), _cpu_s()
        emp.empirical_ntk(cfg, params, x, method=method).block_until_ready()
        wall = time.perf_counter() - t0
        if wall < best:
            best, best_cpu = wall, _cpu_s() - c0
    if cpu is not None:
        cpu.append(best_cpu)
    return best


def _best(f, repeats: int) -> float:
    jax.block_until_ready(f())
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        best = min(best, time.perf_counter() - t0)
    return best


def _time_split(m: int, n: int, T: int, repeats: int) -> None:
    """Where the structured method's time goes, against this machine's GEMM rate (same run):
    the per-example stacks alone (one vjp of the recurrence), one (nT x nT) Gram of the stacks,
    and the arithmetic floor (stack + contraction FLOPs at the measured GEMM rate)."""
    cfg, params, x = _problem(m, n, T)
    lens = jnp.full((n,), T, jnp.int32)
    sc = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), cfg.scales())
    stacks = jax.jit(lambda p, x, l, s: emp._structured_stacks(cfg, p, x, l, s))
    S = stacks(params, x, lens, sc)
    t_stacks = _best(lambda: stacks(params, x, lens, sc), repeats)
    F = S["F"].reshape(n * T, -1)
    gram = jax.jit(lambda a: a @ a.T)
    t_gram = _best(lambda: gram(F), repeats)
    rate = 2.0 * (n * T) ** 2 * F.shape[1] / t_gram
    plan = emp._plan(cfg, "structured", m, n, T, n, T, True, None, 4, None, emp.memory_budget())
    tiles = -(-n // plan.t1)
    frac = tiles * (tiles + 1) / 2 / tiles ** 2          # tile pairs on and above the diagonal
    contract = 2.0 * (n * T) ** 2 * (F.shape[1] + m) * frac      # the two Grams, of D and of F
    stack_flops = 2 * 2.0 * n * T * m * m                 # the forward and the vjp's backward
    floor = (contract + stack_flops) / rate
    print(f"  split: stacks {1e3 * t_stacks:.1f} ms; one {n * T} x {n * T} x {F.shape[1]} Gram "
          f"{1e3 * t_gram:.1f} ms = {rate / 1e9:.0f} GFLOP/s; {tiles} tiles ({frac:.0%} of the "
          f"pairs); {(contract + stack_flops) / 1e9:.1f} GFLOP at that rate: floor "
          f"{1e3 * floor:.1f} ms")


def _compiled_bytes(method: str, m: int, n: int, T: int) -> int:
    """XLA's memory analysis of the compiled kernel: arguments + outputs + temporaries."""
    cfg, params, x = _problem(m, n, T)
    args = emp._prepare_ntk(cfg, params, x, None, method, None, None, None, None, None)
    ma = emp._ntk_jit.lower(*args).compile().memory_analysis()
    return int(ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes)


def _vm(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(method: str, m: int, n: int, T: int) -> None:
    """Subprocess body: growth of the peak RSS (VmHWM) during one call of the compiled kernel."""
    cfg, params, x = _problem(m, n, T)
    args = emp._prepare_ntk(cfg, params, x, None, method, None, None, None, None, None)
    compiled = emp._ntk_jit.lower(*args).compile()
    dynamic = args[5:]                      # (cfg, method, plan, symmetric, seeded) are static
    jax.block_until_ready(dynamic)
    with open("/proc/self/clear_refs", "w") as fh:   # reset the peak-RSS mark (Linux >= 4.0)
        fh.write("5")
    base = _vm("VmRSS")
    t0 = time.perf_counter()
    K = jax.block_until_ready(compiled(*dynamic))
    wall = time.perf_counter() - t0
    peak = _vm("VmHWM")
    print(json.dumps({"base": base, "peak": peak, "wall_s": wall,
                      "finite": bool(np.isfinite(np.asarray(K)).all())}))


def _measure_rss(method: str, m: int, n: int, T: int) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", method, str(m), str(n), str(T)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _available_bytes() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _gib(b: float) -> str:
    return f"{b / 2**30:7.2f} GiB"


def _run_infinite() -> None:
    path = HERE / "kernels_infinite.py"
    if not path.exists():
        print("\n(benchmarks/kernels_infinite.py not present: skipped)")
        return
    spec = importlib.util.spec_from_file_location("kernels_infinite_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    print("\n=== benchmarks/kernels_infinite.py ===")
    argv, sys.argv = sys.argv, [str(path)]
    try:
        mod.main()
    finally:
        sys.argv = argv


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument("--full", action="store_true", help="also run n=512, T=50, m=4096")
    ap.add_argument("--no-infinite", action="store_true", help="skip kernels_infinite.main()")
    ap.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        method, m, n, T = args._child
        _child(method, int(m), int(n), int(T))
        return
    reps = 3 if args.quick else 7
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPU(s); "
          f"load average {os.getloadavg()[0]:.1f} (shared machine: absolute times are noisy)")

    # 1. headline: m=512, n=64, T=20
    print("\n== empirical NTK, 'last', float32, m=512, n=64, T=20 (best of %d) ==" % reps)
    cpus: list = []
    ts = {mth: _time(mth, 512, 64, 20, reps, cpus) for mth in emp.METHODS}
    for (mth, t), c in zip(ts.items(), cpus):
        print(f"  {mth:<12s} {1e3 * t:9.1f} ms   (process CPU time {1e3 * c:.1f} ms)")
    print(f"  jacobian / structured = {ts['jacobian'] / ts['structured']:.1f}x  (target >= 10x)")
    for name, ms in NT_REFERENCE_MS.items():
        print(f"  [reference, not this run] {name}: {ms:.0f} ms "
              f"-> {ms / (1e3 * ts['structured']):.1f}x the structured time here")
    _time_split(512, 64, 20, reps)

    # 2. memory at m = 4096
    print("\n== memory, m=4096, 'last', float32 ==")
    avail = _available_bytes()
    cases = [(64, 20)] + ([(512, 50)] if args.full else [])
    for n, T in [(64, 20), (512, 50)]:
        for mth in emp.METHODS:
            try:
                est = _compiled_bytes(mth, 4096, n, T)
            except Exception as exc:  # XLA refuses to compile what cannot be allocated
                print(f"  n={n:4d} T={T:3d} {mth:<11s} compile failed: {type(exc).__name__}")
                continue
            line = f"  n={n:4d} T={T:3d} {mth:<11s} XLA estimate {_gib(est)}"
            if (n, T) in cases:
                if 1.5 * est > 0.8 * avail:      # measured peaks ran up to ~1.5x XLA's estimate
                    line += f"  -> would not fit ({_gib(avail)} available): not run"
                else:
                    r = _measure_rss(mth, 4096, n, T)
                    line += ("  measured: subprocess failed" if r is None else
                             f"  measured peak RSS growth {_gib(r['peak'] - r['base'])}"
                             f" (total {_gib(r['peak'])}; call {r['wall_s']:.1f} s)")
            print(line)

    # 3. scaling exponents
    print("\n== scaling (time ~ size^p; best of %d) ==" % reps)
    sweeps = {
        ("structured", "n"): ([32, 64, 128, 256], lambda v: (512, v, 20)),
        ("structured", "T"): ([10, 20, 40, 80], lambda v: (512, 64, v)),
        ("structured", "m"): ([256, 512, 1024, 2048], lambda v: (v, 64, 20)),
        ("jacobian", "n"): ([16, 32, 64, 128], lambda v: (512, v, 20)),
        ("jacobian", "T"): ([10, 20, 40], lambda v: (512, 64, v)),
        ("jacobian", "m"): ([128, 256, 512, 1024], lambda v: (v, 64, 20)),
    }
    if args.quick:
        sweeps = {k: (v[:3], f) for k, (v, f) in sweeps.items()}
    for (mth, var), (vals, size) in sweeps.items():
        times = [_time(mth, *size(v), max(2, reps // 2)) for v in vals]
        cells = "  ".join(f"{var}={v}: {1e3 * t:.1f} ms" for v, t in zip(vals, times))
        print(f"  {mth:<11s} in {var}: exponent {_slope(vals, times):4.2f}   ({cells})")
    print("  (structured: recurrence O(n T m^2), contraction O(n^2 T^2 m); jacobian: O(n T m^2) "
          "to build, O(n^2 m^2) to contract)")
    if not args.no_infinite:
        _run_infinite()


if __name__ == "__main__":
    main()
