"""Benchmark: data-set Gram matrices streamed to disk (rnn_ntk.kernels.gram), solved from the store.

    python benchmarks/gram.py            # n = 20,000, T = 10 and n = 10,000, T = 50 (minutes)
    python benchmarks/gram.py --quick    # n = 4,000, T = 10 and n = 2,000, T = 50

Relu, d = 1, s_w = 1.4, s_u = 1, s_b = 0.1, all groups trainable, readout 'last', float32 (x64
off), the NTK only stored. For each (n, T), each measurement in a fresh subprocess (its peak RSS,
VmHWM, is the whole process: Python, JAX, XLA and the data):

- stream: ``gram(cfg, x, out=DIR)`` over all host CPU devices (one per core), after a warm-up
  (a small store, deleted) that compiles the block programs on every device; wall time, peak
  RSS of the process during the streamed run (the mark is reset after the warm-up; the RSS
  before it is printed too), bytes on disk, and the rate (full-matrix entries per second).
- in memory: ``infinite_kernels(cfg, x)`` on the same inputs (both kernels, as the blocks
  compute both), second call of the compiled program; the throughput ratio is
  in-memory time / stream time (target >= 1 / 1.2: streaming at most 1.2x slower).
- solves (first size only), float64, relative ridge 1e-3, one random +-1 target: the direct
  Cholesky (``gram_solve(solver='direct')``) and CG (Nystrom rank 100, tol 1e-8) on the
  top-left n_s x n_s block read from the store (n_s = 2,000 quick, 5,000 full); out of core, the
  cost of one streamed product K v over the whole store (one CG iteration) and of the Nystrom
  sketch, from which a CG solve with the same iteration count is estimated.

The projection for n = 10^5 is n^2 / (measured full-matrix entries per second per device)
/ D: blocks are independent, so the rate scales with devices as long as the disk keeps up
(100k x 100k float32 is 40 GB: at 1 GB/s that is 40 s, small next to the compute here).
The load average is printed: other processes on a shared machine change the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

SW, SU, SB = 1.4, 1.0, 0.1


def _vm(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _setup():
    import jax
    jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    import numpy as np

    from rnn_ntk.model import RNNConfig
    cfg = RNNConfig(width=1, input_dim=1, activation="relu", readout="last", sigma_w=SW,
                    sigma_u=SU, sigma_b=SB)
    return jax, np, cfg


def _data(np, n: int, T: int):
    return np.random.default_rng(0).normal(size=(n, T, 1)).astype(np.float32)


def child_stream(n: int, T: int, out: str) -> dict:
    jax, np, cfg = _setup()
    from rnn_ntk.kernels import gram
    from rnn_ntk.kernels.gram import default_block
    x = _data(np, n, T)
    b0 = default_block("last", T, T)
    b = -(-n // -(-n // b0))                            # as gram() evens it out
    D = len(jax.devices())
    warm = x[: min(n, (2 * D + 1) * b)]
    gram(cfg, warm, block=b, out=out + "-warm")           # compile on every device
    shutil.rmtree(out + "-warm")
    base = _vm("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:      # reset the peak-RSS mark (Linux >= 4.0)
        fh.write("5")
    blocks = []
    t0 = time.perf_counter()
    s = gram(cfg, x, out=out, block=b, on_block=lambda d, t: blocks.append(d))
    wall = time.perf_counter() - t0
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    assert s.complete
    return {"wall_s": wall, "peak_rss": _vm("VmHWM"), "base_rss": base, "bytes": size,
            "blocks": len(blocks),
            "block": b, "devices": D, "entries_per_s": n * n / wall}


def child_inmem(n: int, T: int) -> dict:
    jax, np, cfg = _setup()
    from rnn_ntk.kernels import infinite_kernels
    x = _data(np, n, T)
    jax.block_until_ready(infinite_kernels(cfg, x))        # compile + first run
    t0 = time.perf_counter()
    jax.block_until_ready(infinite_kernels(cfg, x))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "peak_rss": _vm("VmHWM"), "entries_per_s": n * n / wall}


def child_solve(store: str, n_s: int) -> dict:
    import numpy as np

    from rnn_ntk.kernels import gram_solve, load_gram
    from rnn_ntk.kernels.solve import _nystrom, matmul
    K = load_gram(store)
    y = np.sign(np.random.default_rng(1).normal(size=K.shape[0]))
    res: dict = {"n_s": n_s, "n": K.shape[0]}
    t0 = time.perf_counter()
    Ks = np.asarray(K[:n_s, :n_s], np.float64)
    res["read_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    xd = gram_solve(Ks, y[:n_s], 1e-3, solver="direct")
    res["direct_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    xc, info = gram_solve(Ks, y[:n_s], 1e-3, solver="cg", tol=1e-8, return_info=True)
    res["cg_inmem_s"] = time.perf_counter() - t0
    res["cg_inmem_iters"] = info["iterations"]
    res["cg_vs_direct"] = float(np.abs(xc - xd).max() / np.abs(xd).max())
    del Ks
    # out of core on the whole store: one streamed product (a CG iteration's cost) and the
    # preconditioner's sketch (one streamed product with 100 columns)
    t0 = time.perf_counter()
    matmul(K, y)
    res["matvec_store_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _nystrom(K, K.shape[0], 100, 0)
    res["nystrom_store_s"] = time.perf_counter() - t0
    res["peak_rss"] = _vm("VmHWM")
    return res


def _run_child(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, ".."))
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args], env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", nargs="+")
    ap.add_argument("--tmp", default=None, help="where the stores go (default: a temp dir)")
    ap.add_argument("--sizes", default=None, help="e.g. 20000x10,10000x50 (default: by mode)")
    a = ap.parse_args()
    if a.child:
        kind, rest = a.child[0], a.child[1:]
        if kind == "stream":
            r = child_stream(int(rest[0]), int(rest[1]), rest[2])
        elif kind == "inmem":
            r = child_inmem(int(rest[0]), int(rest[1]))
        else:
            r = child_solve(rest[0], int(rest[1]))
        print(json.dumps(r))
        return
    sizes = [(4000, 10), (2000, 50)] if a.quick else [(20000, 10), (10000, 50)]
    if a.sizes:
        sizes = [tuple(int(v) for v in p.split("x")) for p in a.sizes.split(",")]
    print(f"# rnn_ntk Gram benchmark ({'quick' if a.quick else 'full'}), "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()}, "
          f"{os.cpu_count()} CPUs", flush=True)
    tmp = tempfile.mkdtemp(prefix="gram-bench-", dir=a.tmp)
    try:
        rate = None
        for k, (n, T) in enumerate(sizes):
            out = os.path.join(tmp, f"g{n}_{T}")
            s = _run_child(["stream", str(n), str(T), out])
            m = _run_child(["inmem", str(n), str(T)])
            ratio = m["wall_s"] / s["wall_s"]
            print(f"n={n} T={T}: stream {s['wall_s']:.1f} s ({s['blocks']} blocks of {s['block']} "
                  f"rows on {s['devices']} devices, {s['entries_per_s'] / 1e6:.1f} M entries/s), "
                  f"peak RSS {_gb(s['peak_rss'])} (after warm-up {_gb(s['base_rss'])}), "
                  f"written {_gb(s['bytes'])}; in memory "
                  f"{m['wall_s']:.1f} s (peak RSS {_gb(m['peak_rss'])}); throughput stream / "
                  f"in-memory = {ratio:.2f} (target >= {1 / 1.2:.2f})", flush=True)
            if k == 0:
                rate = s["entries_per_s"] / s["devices"]
                from rnn_ntk.kernels.solve import direct_max_n
                n_s = min(direct_max_n(), 2000 if a.quick else 5000, n)
                r = _run_child(["solve", out, str(n_s)])
                est = r["nystrom_store_s"] + r["cg_inmem_iters"] * r["matvec_store_s"]
                print(f"  solves (float64, ridge 1e-3, top-left n_s={n_s} block read from the "
                      f"store in {r['read_s']:.1f} s): direct (Cholesky) {r['direct_s']:.1f} s, "
                      f"CG in memory {r['cg_inmem_s']:.1f} s ({r['cg_inmem_iters']} iterations "
                      f"to 1e-8, max rel diff to direct {r['cg_vs_direct']:.1e}); out of core on "
                      f"the whole n={r['n']} store: one streamed product {r['matvec_store_s']:.1f}"
                      f" s, Nystrom sketch {r['nystrom_store_s']:.1f} s, so a CG solve of "
                      f"{r['cg_inmem_iters']} iterations ~ {est:.0f} s; peak RSS "
                      f"{_gb(r['peak_rss'])}; direct_max_n here = {direct_max_n()}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        n_big = 100_000
        T0 = sizes[0][1]
        for D in (1, 8, 64):
            t = n_big * n_big / (rate * D)          # rate: full-matrix entries per s
            print(f"projected n=1e5, T={T0}, 'last' NTK on {D} device(s) at this machine's "
                  f"per-device rate: {t / 3600:.2f} h ({t / 60:.1f} min)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# done, load {os.getloadavg()}")


if __name__ == "__main__":
    main()
