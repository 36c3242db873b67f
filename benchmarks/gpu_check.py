"""One prepared, time-boxed check of rnn_ntk on a GPU (issue 14, part 3); also runs on CPU.

    python benchmarks/gpu_check.py                 # full check, <= ~8 min on one H200
    python benchmarks/gpu_check.py --quick         # scaled down, <= 2 min, also on 2 CPU cores
    python benchmarks/gpu_check.py --out FILE.md   # default benchmarks/gpu_results.md

Sections, each timed and skipped (with a note) once the wall-clock budget (--budget, default 450 s,
quick 110 s) would be exceeded:
  (b) accuracy: float32 on the default device against a float64 CPU reference computed in a
      subprocess (JAX_PLATFORMS=cpu, x64), on the same float32 inputs: empirical NTK (m = 1024)
      and infinite NNGP/NTK (relu, erf, tanh), target max|K - K_ref| / max|K_ref| <= 1e-5; plus
      a plain float32 GEMM at DEFAULT vs HIGHEST precision against float64 (the size of the TF32
      effect that rnn_ntk.precision guards against on this device).
  (c) training throughput: rnn_ntk.train.train_many (the engine) against a Python loop of a
      jitted single run (make_train), same process, same program per run, compiles excluded.
      Rows m = 64, T = 20, n = 256, 200 steps with 4,096 runs and m = 1024, T = 10, n = 64, 40
      steps with 256 runs. The loop is timed over as many runs as fit its time box (its rate is
      per run). FLOP rate counts 6 n T m^2 per step (forward and the two backward recurrent
      products) and is given as a fraction of a same-run chain of the same (batched) float32
      HIGHEST matmuls back to back. The m = 64 engine rate is also compared with the 2-core CPU
      engine's (CPU_ENGINE_RUNS_PER_S, from this script's --quick on the 2-vCPU dev machine).
  (d) scale: empirical NTK m = 4096, n = 512, T = 50, 'last' (time; compiled memory of the
      computation; device peak) and infinite relu 'last' n = 10,000, T = 50.
  (e) the CLI: ``python -m rnn_ntk.cli demo`` into a zarr store (quick: ``run`` on a tiny spec),
      read back with rnn_ntk.load_results.
  (a) unit tests (model, kernels, dynamics, linearize, train, precision) with pytest in a
      subprocess, last, in the remaining budget (quick: a few precision tests).
Results go to a markdown file (device, driver, versions, command, every number). Uses only the
public API. XLA_PYTHON_CLIENT_PREALLOCATE=false is set (before jax starts) so that the
subprocesses can share the device.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

#: The 2-core CPU engine's rate on the m = 64 row (runs/s): --quick (same spec, 2 runs) on the
#: 2-vCPU dev machine, 2026-12-04, from the engine's CPU time at 2 busy cores (2.26-2.51 in four
#: runs; the wall-clock rate was 0.36-0.5 runs/s at load 7-11); see cpu_quick_results.md.
CPU_ENGINE_RUNS_PER_S = 2.4
D_IN = 8

FULL = dict(budget=450.0,
            emp_acc=(1024, 32, 20), inf_acc=(64, 20),
            rows=[(64, 20, 256, 4096, 200, 20), (1024, 10, 64, 256, 40, 40)], loop_box=25.0,
            emp_big=(4096, 512, 50), inf_big=(10_000, 50),
            # most specific first: a time-out cuts the tail
            tests=["tests/test_precision.py", "tests/test_model.py", "tests/test_linearize.py",
                   "tests/test_dynamics.py", "tests/kernels", "tests/test_train.py"],
            min_test_s=60.0)
QUICK = dict(budget=110.0,
             emp_acc=(128, 16, 10), inf_acc=(16, 10),
             rows=[(64, 20, 256, 2, 200, 20)], loop_box=2.0,
             emp_big=(512, 64, 20), inf_big=(1000, 50),
             tests=["tests/test_precision.py", "-k", "decorators or linearize_is or dynamics_inside"],
             min_test_s=20.0)
TARGETS = {"rel_err": 1e-5, "speedup_vs_cpu": 30.0, "gemm_frac_m1024": 0.40, "emp_big_s": 1.0,
           "inf_big_s": 3.0}


# ----------------------------------------------------------------------------------------------
# small helpers

def _now() -> float:
    return time.perf_counter()


def _best(f, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = _now()
        jax.block_until_ready(f())
        best = min(best, _now() - t)
    return best


def _rel(a, b) -> tuple[float, float]:
    """(max|a - b| / max|b|, ||a - b||_F / ||b||_F) in float64."""
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (float(np.max(np.abs(a - b)) / np.max(np.abs(b))),
            float(np.linalg.norm(a - b) / np.linalg.norm(b)))


def _gib(n) -> str:
    return "n/a" if n is None else f"{n / 2 ** 30:.2f} GiB"


def _peak_bytes():
    try:
        stats = jax.devices()[0].memory_stats()
        return None if not stats else stats.get("peak_bytes_in_use")
    except Exception:   # not every backend has memory statistics
        return None


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in
                                                       env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _cmd(argv) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def _status(ok) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


class Report:
    """Markdown lines, printed as they come."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.targets: list[tuple[str, str, str, str]] = []   # (what, measured, target, status)

    def add(self, *lines: str) -> None:
        for line in lines:
            print(line, flush=True)
            self.lines.append(line)

    def target(self, what: str, measured: str, target: str, ok) -> None:
        self.targets.append((what, measured, target, _status(ok)))


# ----------------------------------------------------------------------------------------------
# (b) accuracy: float32 on the device vs float64 on the CPU

def _acc_configs(P):
    from rnn_ntk import RNNConfig
    m, n, T = P["emp_acc"]
    emp = RNNConfig(width=m, input_dim=D_IN, activation="relu", readout="last", sigma_w=1.2,
                    sigma_b=0.1)
    inf = {a: RNNConfig(width=1, input_dim=D_IN, activation=a, readout="last", sigma_w=1.2,
                        sigma_b=0.1) for a in ("relu", "erf", "tanh")}
    return emp, inf, (n, T), P["inf_acc"]


def _cfg_json(cfg) -> str:
    import dataclasses
    return json.dumps(dataclasses.asdict(cfg))


def _cfg_from_json(text: str):
    from rnn_ntk import RNNConfig
    return RNNConfig(**{k: tuple(v) if isinstance(v, list) else v
                        for k, v in json.loads(text).items()})


def reference_main(inp: str, out: str) -> None:
    """Subprocess body (JAX_PLATFORMS=cpu, JAX_ENABLE_X64=1): float64 kernels on the saved
    float32 inputs and configs."""
    import jax.numpy as jnp
    import numpy as np

    from rnn_ntk.kernels import empirical_ntk, infinite_kernels
    assert jnp.zeros(()).dtype == np.float64 and jax.default_backend() == "cpu"
    z = np.load(inp)
    emp = _cfg_from_json(str(z["cfg_emp"]))
    inf = {a: _cfg_from_json(str(z[f"cfg_{a}"])) for a in ("relu", "erf", "tanh")}
    params = {g: np.asarray(z[f"p_{g}"], np.float64) for g in ("W", "U", "b", "v")}
    res = {"emp": np.asarray(empirical_ntk(emp, params, np.asarray(z["x_emp"], np.float64)))}
    for a, cfg in inf.items():
        nngp, ntk = infinite_kernels(cfg, np.asarray(z["x_inf"], np.float64))
        res[f"nngp_{a}"], res[f"ntk_{a}"] = np.asarray(nngp), np.asarray(ntk)
    np.savez(out, **res)


def section_accuracy(P, R: Report, tmp: Path, quick: bool) -> None:
    import jax.numpy as jnp
    import numpy as np

    from rnn_ntk import init_params
    from rnn_ntk.kernels import empirical_ntk, infinite_kernels
    emp, inf, (n, T), (ni, Ti) = _acc_configs(P)
    rng = np.random.default_rng(0)
    x_emp = rng.standard_normal((n, T, D_IN)).astype(np.float32)
    x_inf = rng.standard_normal((ni, Ti, D_IN)).astype(np.float32)
    params = {g: np.asarray(a) for g, a in init_params(emp, jax.random.key(0), jnp.float32).items()}
    inp, out = tmp / "ref_in.npz", tmp / "ref_out.npz"
    np.savez(inp, x_emp=x_emp, x_inf=x_inf, cfg_emp=_cfg_json(emp),
             **{f"cfg_{a}": _cfg_json(c) for a, c in inf.items()},
             **{f"p_{g}": a for g, a in params.items()})
    env = _env() | {"JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1"}
    argv = [sys.executable, __file__, "--_reference", str(inp), str(out)]
    t0 = _now()
    child = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)

    got = {"emp": np.asarray(empirical_ntk(emp, params, x_emp))}
    for a, cfg in inf.items():
        nngp, ntk = infinite_kernels(cfg, x_inf)
        got[f"nngp_{a}"], got[f"ntk_{a}"] = np.asarray(nngp), np.asarray(ntk)
    assert all(v.dtype == np.float32 for v in got.values())

    # what the scoped precision guards against: one float32 GEMM at each precision vs float64
    k = 1024 if not quick else 256
    A = rng.standard_normal((k, k)).astype(np.float32)
    B = rng.standard_normal((k, k)).astype(np.float32)
    ref = A.astype(np.float64) @ B.astype(np.float64)
    gemm = {p: _rel(jax.jit(lambda a, b, p=p: jnp.matmul(a, b, precision=p))(A, B), ref)[0]
            for p in ("default", "highest")}

    text, _ = child.communicate(timeout=300)
    ref_s = _now() - t0
    if child.returncode != 0:
        raise RuntimeError(f"float64 reference subprocess failed:\n{text[-2000:]}")
    refs = np.load(out)
    R.add(f"float32 on `{jax.devices()[0]}` vs float64 on the CPU (subprocess `{_cmd(argv[1:])}` "
          f"with JAX_PLATFORMS=cpu JAX_ENABLE_X64=1, {ref_s:.1f} s incl. start), same float32 "
          f"inputs. rel = max|K - K_ref| / max|K_ref|; fro = ||K - K_ref||_F / ||K_ref||_F.", "",
          "| kernel | config | rel | fro | target rel <= 1e-5 |", "|---|---|---|---|---|")
    worst = 0.0
    m = emp.width
    for name, val in got.items():
        rel, fro = _rel(val, refs[name])
        worst = max(worst, rel)
        conf = (f"m={m}, n={n}, T={T}, relu, 'last', all groups" if name == "emp"
                else f"n={ni}, T={Ti}, 'last', all groups")
        label = "empirical NTK" if name == "emp" else name.replace("_", " ")
        R.add(f"| {label} | {conf} | {rel:.2e} | {fro:.2e} | {_status(rel <= TARGETS['rel_err'])} |")
    R.add("", f"Control, one float32 GEMM {k}x{k} @ {k}x{k} (no rnn_ntk) vs float64: precision "
          f"DEFAULT rel {gemm['default']:.2e}, HIGHEST rel {gemm['highest']:.2e} (on GPUs with TF32 "
          f"the first is ~1e-3).")
    R.target(f"f32 on device vs f64 CPU, worst of {len(got)} kernels", f"{worst:.2e}", "<= 1e-5",
             worst <= TARGETS["rel_err"])


# ----------------------------------------------------------------------------------------------
# (c) training throughput

def _gemm_chain_rate(batch: int, n: int, m: int, seconds: float) -> tuple[float, int]:
    """FLOP/s of float32 HIGHEST matmuls (batch, n, m) x (batch, m, m), back to back in one
    program (trip count traced: one compile), timed over about ``seconds``."""
    import jax.numpy as jnp
    x = jax.random.normal(jax.random.key(1), (batch, n, m), jnp.float32)
    # one orthogonal matrix per batch entry (values neither blow up nor decay): Q D_b, D_b a
    # random +-1 diagonal
    q = jnp.linalg.qr(jax.random.normal(jax.random.key(2), (m, m), jnp.float32))[0]
    q = q[None] * jax.random.rademacher(jax.random.key(3), (batch, 1, m), jnp.float32)

    @jax.jit
    def chain(x, q, k):
        return jax.lax.fori_loop(0, k, lambda i, h: jnp.matmul(h, q, precision="highest"), x)

    per = 2.0 * batch * n * m * m
    k = 8
    jax.block_until_ready(chain(x, q, k))
    t = _best(lambda: chain(x, q, k), 1)
    while t < 0.25 * seconds and k < 1 << 20:
        k = int(k * min(64.0, max(2.0, seconds / max(t, 1e-6))))
        t = _best(lambda: chain(x, q, k), 1)
    t = _best(lambda: chain(x, q, k), 2)
    return k * per / t, k


def section_training(P, R: Report, budget, quick: bool, cpu_rate) -> None:
    import numpy as np

    from rnn_ntk import RNNConfig
    from rnn_ntk.tasks import TaskConfig
    from rnn_ntk.train import TrainConfig, choose_layout, make_train, run_keys, train_many
    R.add("Engine = `rnn_ntk.train.train_many` (default layout); loop = a Python loop of "
          "`jax.jit(make_train(cfg))` over the runs (timed over the runs that fit "
          f"{P['loop_box']:.0f} s). random_labels, d = {D_IN}, full-batch GD, float32, "
          "matmul_precision 'highest'. Times exclude compilation (engine: second call with the "
          "same number of runs).", "",
          "| m | T | n | runs | steps | layout | engine s (1st call) | engine runs/s | loop runs "
          "timed | loop runs/s | engine/loop | TFLOP/s | GEMM-chain TFLOP/s | fraction |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    for i, (m, T, n, runs, steps, log_every) in enumerate(P["rows"]):
        if budget() < 20:
            notes.append(f"row m={m} skipped: budget spent")
            continue
        cfg = TrainConfig(RNNConfig(width=m, input_dim=D_IN),
                          TaskConfig("random_labels", n_train=n, n_test=16, length=T, input_dim=D_IN),
                          steps=steps, log_every=log_every)
        keys = run_keys(0, np.arange(runs)[:, None])
        hp = {"lr": np.full((runs,), 0.5, np.float32)}
        lay = choose_layout(cfg, runs)
        t = _now()
        jax.block_until_ready(train_many(cfg, keys, hp))
        t_first = _now() - t
        c, t = time.process_time(), _now()
        jax.block_until_ready(train_many(cfg, keys, hp))
        t_eng, cpu_s = _now() - t, time.process_time() - c
        eng_rate = runs / t_eng
        single = jax.jit(make_train(cfg))
        jax.block_until_ready(single(keys[0], {"lr": 0.5}))
        done, t0 = 0, _now()
        while done < runs and (_now() - t0 < P["loop_box"] or done == 0):
            jax.block_until_ready(single(keys[done], {"lr": 0.5}))
            done += 1
        loop_rate = done / (_now() - t0)
        flops = runs * steps * 6.0 * n * T * m * m
        chain_rate, _ = _gemm_chain_rate(lay.batch_size, n, m, 1.0 if not quick else 0.3)
        frac = flops / t_eng / chain_rate
        lay_s = f"{lay.n_devices}x{lay.strategy}(b={lay.batch_size})"
        R.add(f"| {m} | {T} | {n} | {runs} | {steps} | {lay_s} | {t_eng:.2f} ({t_first:.1f}) | "
              f"{eng_rate:.1f} | {done} | {loop_rate:.2f} | {eng_rate / loop_rate:.1f}x | "
              f"{flops / t_eng / 1e12:.3f} | {chain_rate / 1e12:.3f} | {frac:.2f} |")
        if jax.default_backend() == "cpu":
            busy = min(lay.n_devices, os.cpu_count() or 1)
            notes.append(f"m={m}: the engine used {cpu_s:.2f} CPU s for {runs} runs ({cpu_s / t_eng:.2f} "
                         f"busy cores on average over {t_eng:.2f} s wall): at {busy} fully busy cores "
                         f"that is {busy * runs / cpu_s:.2f} runs/s (a load-independent estimate of "
                         f"the quiet machine's rate; the wall-clock rate above depends on the load).")
        if i == 0:
            if cpu_rate and jax.default_backend() != "cpu":
                R.target(f"engine runs/s vs the 2-core CPU engine, m={m} T={T} n={n}",
                         f"{eng_rate / cpu_rate:.1f}x ({eng_rate:.1f} vs {cpu_rate:.2f} runs/s)",
                         ">= 30x", eng_rate / cpu_rate >= TARGETS["speedup_vs_cpu"])
            else:
                R.target(f"engine runs/s, m={m} T={T} n={n}", f"{eng_rate:.2f} runs/s",
                         "(CPU baseline for the 30x target)", None)
        if m >= 1024 and budget() > 40:   # what the faster training precision buys here
            fast = cfg.replace(matmul_precision="tensorfloat32")
            jax.block_until_ready(train_many(fast, keys, hp))
            t_fast = _best(lambda: train_many(fast, keys, hp), 1)
            notes.append(f"m={m} with TrainConfig.matmul_precision='tensorfloat32': engine "
                         f"{t_fast:.2f} s vs {t_eng:.2f} s at 'highest' ({t_eng / t_fast:.2f}x), "
                         f"{flops / t_fast / 1e12:.3f} TFLOP/s.")
        if m >= 1024:
            R.target(f"FLOP rate vs same-run GEMM chain, m={m}", f"{frac:.2f}", ">= 0.40",
                     frac >= TARGETS["gemm_frac_m1024"])
    if P["rows"][-1][0] < 1024:
        R.target("FLOP rate vs same-run GEMM chain, m=1024", "not run (--quick)", ">= 0.40", None)
    R.add("", "GEMM chain: the same (batched, one batch = the runs one device computes at once) "
          "(n, m) x (m, m) float32 HIGHEST matmuls back to back in one program; fraction = "
          "engine FLOP rate / chain rate (6 n T m^2 flops per step counted).", *notes)


# ----------------------------------------------------------------------------------------------
# (d) scale

def section_scale(P, R: Report, budget) -> None:
    import jax.numpy as jnp
    import numpy as np

    from rnn_ntk import RNNConfig, init_params
    from rnn_ntk.kernels import empirical_ntk, infinite_kernels
    m, n, T = P["emp_big"]
    cfg = RNNConfig(width=m, input_dim=D_IN, activation="relu", readout="last", sigma_w=1.2,
                    sigma_b=0.1)
    params = init_params(cfg, jax.random.key(0), jnp.float32)
    x = jax.random.normal(jax.random.key(1), (n, T, D_IN), jnp.float32)
    peak0 = _peak_bytes()
    t = _now()
    compiled = jax.jit(lambda p, x: empirical_ntk(cfg, p, x)).lower(params, x).compile()
    t_compile = _now() - t
    ma = compiled.memory_analysis()
    mem = None if ma is None else (ma.argument_size_in_bytes + ma.output_size_in_bytes
                                   + ma.temp_size_in_bytes)
    jax.block_until_ready(compiled(params, x))
    t_emp = _best(lambda: compiled(params, x), 3)
    peak1 = _peak_bytes()
    R.add("| computation | time (best of 3 after a warm-up) | compile | memory |", "|---|---|---|---|",
          f"| empirical NTK m={m}, n={n}, T={T}, relu, 'last', all groups, f32 | {t_emp:.3f} s | "
          f"{t_compile:.1f} s | compiled args+out+temp {_gib(mem)}; device peak "
          f"{_gib(peak0)} before, {_gib(peak1)} after |")
    R.target(f"empirical NTK m={m}, n={n}, T={T}", f"{t_emp:.3f} s", "<= 1 s" if m == 4096 else
             "(<= 1 s at m=4096)", (t_emp <= TARGETS["emp_big_s"]) if m == 4096 else None)
    if budget() < 20:
        R.add("infinite kernel at scale skipped: budget spent")
        return
    ni, Ti = P["inf_big"]
    icfg = RNNConfig(width=1, input_dim=D_IN, activation="relu", readout="last", sigma_w=1.2,
                     sigma_b=0.1)
    xi = np.random.default_rng(1).standard_normal((ni, Ti, D_IN)).astype(np.float32)
    t = _now()
    jax.block_until_ready(infinite_kernels(icfg, xi))
    t_first = _now() - t
    t_inf = _best(lambda: infinite_kernels(icfg, xi), 2)
    R.add(f"| infinite NNGP+NTK relu n={ni}, T={Ti}, 'last', f32 | {t_inf:.3f} s | first call "
          f"{t_first:.1f} s | device peak {_gib(_peak_bytes())} after |")
    R.target(f"infinite relu n={ni}, T={Ti}", f"{t_inf:.3f} s",
             "<= 3 s" if ni == 10_000 else "(<= 3 s at n=10^4)",
             (t_inf <= TARGETS["inf_big_s"]) if ni == 10_000 else None)


# ----------------------------------------------------------------------------------------------
# (e) the CLI into zarr

TINY_SPEC = """
[model]
width = [8, 16]
[task]
kind = "random_labels"
n_train = 8
n_test = 8
length = 4
input_dim = 4
[train]
steps = 10
log_every = 5
lr = 0.5
[sweep]
seeds = 2
"""


def section_cli(P, R: Report, tmp: Path, quick: bool) -> None:
    out = tmp / "cli_out"
    if quick:
        spec = tmp / "tiny.toml"
        spec.write_text(TINY_SPEC)
        argv = [sys.executable, "-m", "rnn_ntk.cli", "run", str(spec), "--out", str(out)]
    else:
        argv = [sys.executable, "-m", "rnn_ntk.cli", "demo", "--out", str(out)]
    t = _now()
    proc = subprocess.run(argv, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    wall = _now() - t
    if proc.returncode != 0:
        raise RuntimeError(f"`{_cmd(argv[1:])}` exited {proc.returncode}:\n"
                           f"{(proc.stdout + proc.stderr)[-2000:]}")
    from rnn_ntk import load_results
    ds = load_results(out)
    zarr_ok = (out / "results.zarr").is_dir()
    ok = zarr_ok and bool(ds["ran"].all()) and "train_loss" in ds
    R.add(f"`{_cmd(['python'] + argv[1:])}` (output dir in a temp folder): exit 0 in {wall:.1f} s; "
          f"results.zarr written: {zarr_ok}; load_results: dims {dict(ds.sizes)}, "
          f"{int(ds['ran'].sum())}/{ds['ran'].size} runs finished, attrs matmul_precision = "
          f"{ds.attrs.get('matmul_precision')!r}; final train_loss median "
          f"{float(ds['train_loss'].isel(step=-1).median()):.4g}.")
    R.target("CLI " + ("run (tiny spec)" if quick else "demo") + " into zarr, read back",
             f"{wall:.1f} s", "all runs finished", ok)


# ----------------------------------------------------------------------------------------------
# (a) unit tests

def section_tests(P, R: Report, budget) -> None:
    limit = budget() - 5
    if limit < P["min_test_s"]:
        R.add(f"skipped: {limit:.0f} s of budget left (< {P['min_test_s']:.0f} s)")
        R.target("unit tests", "not run", "all pass", None)
        return
    argv = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-rfE"] + P["tests"]
    log = tempfile.TemporaryFile(mode="w+")
    t = _now()
    proc = subprocess.Popen(argv, env=_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            text=True)
    try:
        proc.wait(timeout=limit)
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        timed_out = True
    wall = _now() - t
    log.seek(0)
    text = log.read()
    counts = {k: sum(1 for line in text.splitlines() if f" {k}" in line and "::" in line)
              for k in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
    summary = [line for line in text.splitlines() if line.startswith(("FAILED", "ERROR"))][:15]
    R.add(f"`{_cmd(['python'] + argv[1:])}`: {'TIMED OUT after' if timed_out else 'exit ' + str(proc.returncode) + ' in'} "
          f"{wall:.0f} s; passed {counts['PASSED']}, failed {counts['FAILED']}, errors "
          f"{counts['ERROR']}, skipped {counts['SKIPPED']}.")
    if summary:
        R.add("", "```", *summary, "```")
    if not timed_out and proc.returncode not in (0, 1):
        R.add("", "```", *text.splitlines()[-15:], "```")
    ok = (not timed_out and proc.returncode == 0) if counts["FAILED"] + counts["ERROR"] == 0 else False
    R.target("unit tests " + ("(subset)" if len(P["tests"]) < 6 else "(model, kernels, dynamics, "
             "linearize, train, precision)"), f"{counts['PASSED']} passed, {counts['FAILED']} "
             f"failed" + (", timed out" if timed_out else ""), "all pass", ok)


# ----------------------------------------------------------------------------------------------

def _device_lines(argv) -> list[str]:
    import jaxlib
    dev = jax.devices()[0]
    driver = "n/a (no nvidia-smi)"
    if shutil.which("nvidia-smi"):
        try:
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=30
            ).stdout.strip().replace("\n", "; ")
            cuda = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
            cuda = [w for line in cuda.splitlines() if "CUDA Version" in line for w in
                    [line.split("CUDA Version:")[1].split("|")[0].strip()]]
            driver += f"; CUDA (driver) {cuda[0]}" if cuda else ""
        except Exception as e:   # report, do not fail the check
            driver = f"nvidia-smi failed: {e}"
    load = os.getloadavg()
    return [f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
            f"- command: `{_cmd(['python', 'benchmarks/gpu_check.py'] + list(argv))}` "
            f"(cwd: repository root)",
            f"- device: {dev.platform} `{dev.device_kind}`, {len(jax.devices())} device(s) "
            f"of the default backend ({jax.default_backend()})",
            f"- driver: {driver}",
            f"- jax {jax.__version__}, jaxlib {jaxlib.__version__}, python "
            f"{platform.python_version()}, host {platform.machine()} with {os.cpu_count()} CPUs, "
            f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="scaled down (<= 2 min, also on CPU)")
    p.add_argument("--out", default=None, help="markdown output (default benchmarks/gpu_results.md)")
    p.add_argument("--budget", type=float, default=None, help="wall-clock budget in seconds")
    p.add_argument("--cpu-runs-per-s", type=float, default=CPU_ENGINE_RUNS_PER_S,
                   help="the 2-core CPU engine's runs/s on the m=64 row (for the 30x target)")
    p.add_argument("--_reference", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._reference:
        reference_main(*args._reference)
        return 0
    if args.budget is not None and args.budget <= 0:
        p.error("--budget must be positive")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "gpu_results.md"
    if out.exists() and out.is_dir():
        p.error(f"--out {out} is a directory")
    # one host device per core (as the CLI does), before any backend starts
    try:
        jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    except Exception as e:   # an option of this jax; the check runs without it
        print(f"note: jax_num_cpu_devices not set ({e})", flush=True)
    P = QUICK if args.quick else FULL
    total = args.budget or P["budget"]
    t_start = _now()

    def budget() -> float:
        return total - (_now() - t_start)

    R = Report()
    title = "CPU (--quick)" if jax.default_backend() == "cpu" else jax.devices()[0].device_kind
    R.add(f"# rnn_ntk GPU check: results on {title}", "",
          "Written by `benchmarks/gpu_check.py` (see its docstring for what each section measures).",
          "" if jax.default_backend() != "cpu" else
          "**This run is on CPU, not a GPU**: sizes are scaled down (--quick); the numbers check "
          "that the script works and give the CPU baselines.", "", *_device_lines(argv), "")
    status = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmpdir:
        tmp = Path(tmpdir)
        sections = [("b", "Accuracy: float32 on the device vs float64 on the CPU",
                     lambda: section_accuracy(P, R, tmp, args.quick), 25),
                    ("d", "Scale: large empirical and infinite kernels",
                     lambda: section_scale(P, R, budget), 20),
                    ("c", "Training throughput: engine vs a loop of jitted single runs",
                     lambda: section_training(P, R, budget, args.quick, args.cpu_runs_per_s), 30),
                    ("e", "The CLI into zarr", lambda: section_cli(P, R, tmp, args.quick), 15),
                    ("a", "Unit tests on the device", lambda: section_tests(P, R, budget), 0)]
        for key, name, fn, need in sections:
            R.add(f"## ({key}) {name}", "")
            if budget() < need:
                R.add(f"skipped: {budget():.0f} s of the {total:.0f} s budget left (needs ~{need} s)", "")
                status[key] = "skipped"
                continue
            t = _now()
            try:
                fn()
                status[key] = f"done in {_now() - t:.1f} s"
            except Exception as e:
                status[key] = f"FAILED after {_now() - t:.1f} s"
                R.add("", f"**FAILED**: {type(e).__name__}: {e}", "", "```",
                      *traceback.format_exc().splitlines()[-12:], "```")
                R.target(f"section ({key})", "exception", "no error", False)
            R.add("", f"_section ({key}): {status[key]}_", "")
    wall = _now() - t_start
    R.add("## Summary against the issue's targets", "", "| check | measured | target | status |",
          "|---|---|---|---|", *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in R.targets], "",
          f"Total wall time {wall:.1f} s (budget {total:.0f} s); sections: "
          + ", ".join(f"({k}) {v}" for k, v in status.items())
          + f"; load average at end {os.getloadavg()[0]:.2f}.")
    _write_atomic(out, "\n".join(R.lines) + "\n")
    print(f"\nwritten: {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
