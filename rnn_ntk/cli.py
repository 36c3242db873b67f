"""The ``rnn-ntk`` command line: the only place that parses arguments, prints or exits.

    rnn-ntk run FILE [--out DIR] [--resume] [--max-memory SIZE] [--shard I/N]
                [--distributed [--coordinator HOST:PORT --num-processes N --process-id I]]
    rnn-ntk status DIR
    rnn-ntk validate FILE [--max-memory SIZE]
    rnn-ntk demo [--out DIR] [--resume]
    rnn-ntk reproduce [NAME ...] [--scale ci|default|large] [--results DIR] [--figures DIR]
    rnn-ntk figures [NAME ...] [--results DIR] [--out DIR]

Subcommands live in a registry (:func:`register`), so others (``reproduce``, ``figures``) plug
in with one call. Exit status: 0 success, 1 refused or failed (e.g. an existing output directory
without --resume, a changed spec on resume, an output directory another writer holds), 2 invalid
spec or arguments (nothing written).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None],
             handler: Callable[[argparse.Namespace], int], description: str | None = None) -> None:
    """Add a subcommand: ``add_arguments(parser)`` declares its options, ``handler(args)`` runs it
    and returns the exit status."""
    if name in COMMANDS:
        raise ValueError(f"subcommand {name!r} is already registered")
    COMMANDS[name] = Command(name, help, description or help, add_arguments, handler)


def _err(msg: str) -> None:
    print(f"rnn-ntk: error: {msg}", file=sys.stderr)


def setup_jax(x64: bool = False) -> None:
    """Configure JAX before its backend starts: one CPU device per core (so the training engine
    shards runs over the cores; only the CPU backend is affected) and float64 when asked. A
    device count already configured (jax_num_cpu_devices set by the caller), or a backend already
    running (an in-process call), is left as it is."""
    import jax
    if jax.config.jax_num_cpu_devices < 1:
        try:
            jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
        except RuntimeError:
            pass  # backends already initialised
    if x64:
        jax.config.update("jax_enable_x64", True)


def _print_problems(problems: Sequence[str]) -> None:
    for p in problems:
        _err(p)


def _load_spec(path: str):
    from rnn_ntk import sweep
    try:
        return sweep.load_spec(path)
    except sweep.SpecError as e:
        _print_problems(e.problems)
        return None


def _max_memory(args: argparse.Namespace) -> tuple[bool, int | None]:
    from rnn_ntk import sweep
    if args.max_memory is None:
        return True, None
    try:
        return True, sweep.parse_size(args.max_memory)
    except ValueError as e:
        _err(f"--max-memory: {e}")
        return False, None


def _spec_and_budget(args: argparse.Namespace):
    """(spec, max_memory bytes or None) from ``args.file`` and ``--max-memory``; None after
    printing the problems (exit 2)."""
    spec = _load_spec(args.file)
    if spec is None:
        return None
    ok, mm = _max_memory(args)
    return (spec, mm) if ok else None


def _run_spec(spec, out: str, *, resume: bool, max_memory: int | None, x64: bool,
              distributed: bool = False, shard=None) -> int:
    """Plan (exit 2 if invalid, nothing written), take the out dir's writer lock (exit 1 if
    another writer holds it), open the store and run the chunks under a tqdm bar of training
    run-steps (ETA; chunk count in the postfix; disabled when stderr is not a terminal).
    ``distributed``: jax.distributed is running; process 0 plans, writes and reports.
    ``shard`` (a :class:`rnn_ntk.sweep.shard.Shard`): that shard's lock and chunks; a store of
    another spec or shard count exits 2 before any compute."""
    from rnn_ntk import store, sweep
    setup_jax(x64 or "float64" in spec.dtypes)
    if distributed:
        return _run_distributed(spec, out, resume=resume, max_memory=max_memory)
    try:
        plan = sweep.make_plan(spec, max_memory=max_memory)
    except sweep.SpecError as e:
        _print_problems(e.problems)
        return EXIT_USAGE
    try:
        if shard is not None:
            store.check_store(out, plan.spec.resolved, shard.count)
        with store.lock_store(out, shard=shard.label if shard else None) as lock:
            if lock.note:
                print(f"rnn-ntk: note: {lock.note}", file=sys.stderr)
            if shard is None:
                plan = sweep.prepare(spec, out, resume=resume, max_memory=max_memory, plan=plan)
            else:
                plan = sweep.prepare_shard(spec, out, shard, resume=resume,
                                           max_memory=max_memory, plan=plan)
            summary = _execute_with_bar(spec, plan, out, shard)
    except store.StoreConflict as e:
        _err(str(e))
        return EXIT_USAGE if shard is not None else EXIT_FAIL
    except store.StoreError as e:
        _err(str(e))
        return EXIT_FAIL
    _print_summary(spec, summary, shard)
    return EXIT_OK


def _print_summary(spec, summary, shard=None) -> None:
    who = spec.name if shard is None else f"{spec.name} shard {shard}"
    print(f"{who}: {summary.n_runs} runs in the store ({summary.n_trained} trained now, "
          f"{summary.n_skipped} finished before), {summary.n_diverged} diverged, wall time "
          f"{summary.wall_s:.1f} s; results: {summary.results}")


def _run_distributed(spec, out: str, *, resume: bool, max_memory: int | None) -> int:
    """:func:`_run_spec` on several processes: the same exit status on every process; process 0
    alone holds the lock, writes the store and prints."""
    from rnn_ntk import distributed, store, sweep
    from rnn_ntk.sweep.execute import prepare_distributed
    writer = distributed.is_writer()
    try:
        with prepare_distributed(spec, out, resume=resume, max_memory=max_memory) as (plan, note):
            if note and writer:
                print(f"rnn-ntk: note: {note}", file=sys.stderr)
            summary = _execute_with_bar(spec, plan, out, show=writer)
    except sweep.SpecError as e:
        _print_problems(e.problems)
        return EXIT_USAGE
    except distributed.MismatchError as e:
        _err(str(e))
        return EXIT_USAGE
    except (store.StoreError, distributed.DistributedError) as e:
        _err(str(e))
        return EXIT_FAIL
    if writer:
        _print_summary(spec, summary)
    return EXIT_OK


def _execute_with_bar(spec, plan, out: str, shard=None, show: bool = True):
    from tqdm import tqdm

    from rnn_ntk import sweep
    todo = sum(len(c.runs) for c in plan.chunks)
    if show:
        mine = "" if shard is None else f" (shard {shard}: its own chunks below)"
        print(f"rnn-ntk: {spec.name}: {len(plan.runs)} runs{mine}, {len(plan.programs)} "
              f"program(s), {len(plan.chunks)} chunk(s) to run ({todo} runs; {plan.n_done} "
              f"already finished) -> {out}", file=sys.stderr)
    bar = tqdm(total=plan.steps_todo, unit="step", unit_scale=True, desc=spec.name,
               disable=None if show else True, file=sys.stderr, dynamic_ncols=True)
    done = {"chunks": 0, "runs": 0}

    def postfix() -> str:
        return f"chunk {done['chunks']}/{len(plan.chunks)}, {done['runs']}/{todo} runs"

    bar.set_postfix_str(postfix(), refresh=False)

    def on_step(n: int) -> None:   # from device threads, serialised by the training engine
        bar.update(n)

    def on_chunk(chunk, seconds: float) -> None:
        done["chunks"] += 1
        done["runs"] += len(chunk.runs)
        bar.set_postfix_str(postfix(), refresh=False)
        bar.refresh()

    try:
        return sweep.execute(plan, out, on_chunk=on_chunk,
                             on_step=None if bar.disable else on_step, shard=shard)
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------
# run


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="the sweep spec (TOML)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: the spec's `out`, "
                   "else results/<spec name>); must be new or empty unless --resume")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in DIR: finished chunks are skipped; refused "
                        "if the spec changed since the first run")
    p.add_argument("--max-memory", metavar="SIZE",
                   # named, not computed: building the parser must not import sweep (jax)
                   help="memory budget for one chunk of runs, e.g. 4G or 512M (default: the "
                        "fraction rnn_ntk.sweep.MEMORY_FRACTION of the memory per device times "
                        "the devices: memory_stats on GPU/TPU, free host RAM on CPU); buckets "
                        "that do not fit are split into chunks")
    p.add_argument("--x64", action="store_true",
                   help="enable float64 in JAX (automatic when the spec asks for dtype float64)")
    p.add_argument("--shard", metavar="I/N",
                   help="run shard I of N (0 <= I < N): a fixed, cost-balanced share of the "
                        "chunks; N shards (e.g. a job array) may write DIR at once, each with its "
                        "own lock; --resume with the same I/N continues it. See `rnn-ntk status`")
    g = p.add_argument_group(
        "several processes (jax.distributed)",
        "Start the same command once per process (srun, a TPU pod's workers, or by hand). "
        "Without the three settings JAX detects the cluster (Slurm, Open MPI, Cloud TPU); "
        "env RNN_NTK_COORDINATOR, RNN_NTK_NUM_PROCESSES, RNN_NTK_PROCESS_ID stand in for "
        "them. Process 0 writes DIR; a process that cannot join within RNN_NTK_DIST_TIMEOUT "
        "seconds (default 120) exits 1.")
    g.add_argument("--distributed", action="store_true",
                   help="one sweep over the devices of all processes")
    g.add_argument("--coordinator", metavar="HOST:PORT",
                   help="address of process 0, where it serves the coordinator")
    g.add_argument("--num-processes", metavar="N", type=int, help="number of processes")
    g.add_argument("--process-id", metavar="I", type=int, help="this process's id in [0, N)")


def _dist_timeout(message: str) -> None:
    """The start-up watchdog's last word (from its thread; the main thread is stuck in JAX)."""
    _err(message)
    sys.stderr.flush()
    os._exit(EXIT_FAIL)


def _start_distributed(args: argparse.Namespace) -> int:
    """jax.distributed first (before any other JAX call); returns an exit status, 0 when up."""
    from rnn_ntk import distributed
    setup_jax()        # the CPU device count: before the backend starts
    try:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                               on_timeout=_dist_timeout)
    except distributed.DistributedError as e:
        _err(str(e))
        return EXIT_FAIL
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    given = [f for f, v in (("--coordinator", args.coordinator),
                            ("--num-processes", args.num_processes),
                            ("--process-id", args.process_id)) if v is not None]
    if given and not args.distributed:
        _err(f"{', '.join(given)}: only with --distributed")
        return EXIT_USAGE
    if args.distributed and args.shard is not None:
        _err("--shard and --distributed exclude each other (a distributed run is one writer over "
             "all processes; shards are independent writers)")
        return EXIT_USAGE
    shard = None
    if args.shard is not None:
        from rnn_ntk.sweep.shard import parse_shard
        try:
            shard = parse_shard(args.shard)
        except ValueError as e:
            _err(str(e))
            return EXIT_USAGE
    if args.distributed:
        ok, mm = _max_memory(args)
        if not ok:
            return EXIT_USAGE
        code = _start_distributed(args)
        if code:
            return code
        return _cmd_run_distributed(args, mm)
    got = _spec_and_budget(args)
    if got is None:
        return EXIT_USAGE
    spec, mm = got
    out = args.out or spec.out or str(Path("results") / spec.name)
    return _run_spec(spec, out, resume=args.resume, max_memory=mm, x64=args.x64, shard=shard)


# ---------------------------------------------------------------------------------------------
# status


def _add_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="the output directory of a sweep (`run --out`)")


def _cmd_status(args: argparse.Namespace) -> int:
    from rnn_ntk import store
    from rnn_ntk.sweep.shard import format_status, store_status
    try:
        print(format_status(store_status(args.dir)))
    except store.StoreError as e:
        _err(str(e))
        return EXIT_FAIL
    return EXIT_OK


def _cmd_run_distributed(args: argparse.Namespace, mm: int | None) -> int:
    """After jax.distributed is up: load the spec and check that every process holds the same
    one (valid or not) before anything else, so that all exit alike (2 on a mismatch, naming
    the keys)."""
    from rnn_ntk import distributed, sweep
    try:
        spec, problems = sweep.load_spec(args.file), []
    except sweep.SpecError as e:
        spec, problems = None, e.problems
    try:
        distributed.agree({"spec": spec.resolved} if spec else {"invalid spec": problems})
    except distributed.MismatchError as e:
        _err(str(e))
        return EXIT_USAGE
    if spec is None:
        _print_problems(problems)
        return EXIT_USAGE
    out = args.out or spec.out or str(Path("results") / spec.name)
    return _run_spec(spec, out, resume=args.resume, max_memory=mm, x64=args.x64,
                     distributed=True)


# ---------------------------------------------------------------------------------------------
# validate


def _add_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="the sweep spec (TOML)")
    p.add_argument("--max-memory", metavar="SIZE",
                   help="memory budget to plan chunks with (as for `run`)")
    p.add_argument("--x64", action="store_true", help="enable float64 in JAX")


def _cmd_validate(args: argparse.Namespace) -> int:
    from rnn_ntk import sweep
    got = _spec_and_budget(args)
    if got is None:
        return EXIT_USAGE
    spec, mm = got
    setup_jax(args.x64 or "float64" in spec.dtypes)
    try:
        plan = sweep.make_plan(spec, max_memory=mm)
    except sweep.SpecError as e:
        _print_problems(e.problems)
        return EXIT_USAGE
    print(sweep.describe_plan(plan))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# demo


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="DIR", default="rnn-ntk-demo",
                   help="output directory (default: ./rnn-ntk-demo)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in DIR")
    p.add_argument("--max-memory", metavar="SIZE", help="memory budget (as for `run`)")


def plot_loss_curves(ds, stem: str | Path, title: str | None = None) -> list[Path]:
    """Train-loss curves of a store: one panel per value of the first non-width axis (besides
    seed), one line per width (median over seeds, band from min to max). Returns the files."""
    import numpy as np

    from rnn_ntk import plots
    loss = ds["train_loss"]
    axes_other = [d for d in loss.dims if d not in ("width", "seed", "step")]
    panel_dim = axes_other[0] if axes_other else None
    panels = list(ds[panel_dim].values) if panel_dim else [None]
    fig, axs = plots.new_figure(ncols=len(panels), sharey=True)
    widths = list(ds["width"].values) if "width" in loss.dims else [None]
    colors = plots.width_colors(len(widths))
    step = ds["step"].values
    for ax, pv in zip(axs[0], panels):
        sub = loss.sel({panel_dim: pv}) if panel_dim else loss
        for w, c in zip(widths, colors):
            cur = sub.sel(width=w) if w is not None else sub
            rest = [d for d in cur.dims if d != "step"]
            arr = cur.transpose(*rest, "step").values.reshape(-1, len(step))
            arr = arr[~np.all(np.isnan(arr), axis=1)]
            if not len(arr):
                continue
            ax.fill_between(step, np.nanmin(arr, 0), np.nanmax(arr, 0), color=c, alpha=0.2, lw=0)
            ax.plot(step, np.nanmedian(arr, 0), color=c, label=str(w) if w is not None else None)
        ax.set_yscale("log")
        ax.set_xlabel("gradient-descent step")
        head = f"{panel_dim} = {pv}" if panel_dim else ""
        if panel_dim == "trainable":
            head = "trained: " + (", ".join(str(pv)) if len(str(pv)) > 1 else str(pv))
        ax.set_title(head)
    axs[0][0].set_ylabel("train loss (mean squared error)")
    axs[0][-1].legend(title="width", frameon=False)
    if title:
        fig.suptitle(title)
    return plots.save(fig, stem)


def _cmd_demo(args: argparse.Namespace) -> int:
    from rnn_ntk import store, sweep
    spec = sweep.demo_spec()
    ok, mm = _max_memory(args)
    if not ok:
        return EXIT_USAGE
    code = _run_spec(spec, args.out, resume=args.resume, max_memory=mm, x64=False)
    if code != EXIT_OK:
        return code
    ds = store.load_results(args.out)
    n_seeds = ds.sizes.get("seed", 1)
    paths = plot_loss_curves(ds, Path(args.out) / "loss_curves",
                             title=f"{spec.description} (median and range over {n_seeds} seeds)")
    print(f"figure: {paths[0]}")
    return EXIT_OK


register("run", "run a sweep from a TOML spec into a result store", _add_run, _cmd_run,
         "Validate the spec, plan programs and chunks, train every chunk (each written atomically "
         "to DIR/chunks) and consolidate DIR/results.zarr. Open results with "
         "rnn_ntk.load_results(DIR). On a terminal a progress bar counts training steps (with "
         "an ETA). One writer per DIR: a second run or --resume on a DIR in use is refused "
         "(exit status 1), naming the holder.")
register("status", "what a sweep store holds: runs finished, shards running / failed, time left",
         _add_status, _cmd_status,
         "Read DIR without taking any lock (safe while shards or a writer run): runs finished, "
         "chunks written, and per shard the chunks done / running / failed / pending with an "
         "estimated time left from the chunk timings already written. 'running': a live process "
         "holds the shard's lock; 'failed': its lock was left by a process that died; rerun "
         "that shard with --resume.")
register("validate", "check a spec and print the resolved plan (no training)", _add_validate,
         _cmd_validate,
         "Report every problem in the spec (exit status 2), or print the plan: compiled programs "
         "(buckets and the widths each packs), lanes, chunks, estimated memory and time.")
register("demo", "a small built-in sweep (about a minute on 2 CPU cores) and its figure",
         _add_demo, _cmd_demo,
         "Random labels, full-batch GD, widths 16..128 x 3 seeds, only W or all of W, U, b, v "
         "trained. Writes the store and DIR/loss_curves.png.")


def _add_reproduce(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="experiments to run (default: all in experiments/)")
    p.add_argument("--scale", default="default", choices=("ci", "default", "large"),
                   help="'ci' seconds, 'default' minutes on 2 CPU cores, 'large' GPU-sized")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="where results are stored (resumable; default: results/)")
    p.add_argument("--figures", default="figures", metavar="DIR",
                   help="where figures are written (default: figures/)")
    p.add_argument("--results-md", default=None, metavar="FILE",
                   help="the generated claims page (default: experiments/RESULTS.md)")


def _add_figures(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="experiments to draw (default: all with stored results)")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="stored results to draw from (default: results/)")
    p.add_argument("--out", default="figures", metavar="DIR",
                   help="where figures are written (default: figures/)")
    p.add_argument("--results-md", default=None, metavar="FILE",
                   help="the generated claims page (default: experiments/RESULTS.md)")


def _draw(modules, results: Path, fig_dir: Path, results_md: str | None, *,
          names_given: bool) -> int:
    """Figures and claims of each named experiment from stored results, then RESULTS.md from the
    claims of every experiment that has stored results (naming one experiment redraws its figures
    but never drops the others' rows from RESULTS.md)."""
    import time

    from rnn_ntk import reproduce
    claims, missing = {}, []
    for mod in modules:
        try:
            paths = mod.figures(results, fig_dir)
            rows = mod.claims(results)
        except FileNotFoundError:
            missing.append(mod.NAME)
            continue
        claims[mod.NAME] = rows
        for path in paths:
            print(f"figure: {path}")
        for c in rows:
            print(f"{c.experiment}: {c.claim} -- {c.statistic} = {c.value} [{c.criterion}] "
                  f"{c.verdict}")
    if missing:
        print(f"no stored results for: {', '.join(missing)} (run rnn-ntk reproduce first)",
              file=sys.stderr)
        if names_given:
            return EXIT_FAIL
    for mod in reproduce.discover():
        if mod.NAME not in claims:
            try:
                claims[mod.NAME] = mod.claims(results)
            except FileNotFoundError:
                pass
    if claims:
        md_path = Path(results_md) if results_md else reproduce.experiments_dir() / "RESULTS.md"
        header = f"Last generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
        rows = [c for name in sorted(claims) for c in claims[name]]
        reproduce.write_text(md_path, reproduce.results_markdown(rows, header=header))
        print(f"claims: {md_path} ({len(claims)} experiments)")
    return EXIT_OK


def _experiments(names: list[str]):
    """Float64 on, then the named (or all) experiment modules; None after printing the error."""
    from rnn_ntk import reproduce
    setup_jax(x64=True)
    try:
        return reproduce.discover(names or None)
    except (ValueError, FileNotFoundError) as e:
        _err(str(e))
        return None


def _cmd_reproduce(args: argparse.Namespace) -> int:
    import time

    from rnn_ntk import train

    modules = _experiments(args.names)
    if modules is None:
        return EXIT_USAGE
    results = Path(args.results)
    for mod in modules:
        t0 = time.perf_counter()
        print(f"[{mod.NAME}] {mod.TITLE} (scale {args.scale})", flush=True)
        mod.run(results, args.scale)
        print(f"[{mod.NAME}] done in {time.perf_counter() - t0:.0f} s", flush=True)
        train.release_compiled(force=True)   # experiments share no programs; free their maps
    return _draw(modules, results, Path(args.figures), args.results_md, names_given=True)


def _cmd_figures(args: argparse.Namespace) -> int:
    modules = _experiments(args.names)
    if modules is None:
        return EXIT_USAGE
    return _draw(modules, Path(args.results), Path(args.out), args.results_md,
                 names_given=bool(args.names))


register("reproduce", "run the papers' experiments (resumable), then draw figures and RESULTS.md",
         _add_reproduce, _cmd_reproduce,
         "Run each experiment in experiments/ (finished pieces are skipped), write its figures "
         "(PNG and PDF) and the generated claims page experiments/RESULTS.md.")
register("figures", "redraw every figure and RESULTS.md from stored results (no training)",
         _add_figures, _cmd_figures,
         "Redraw the figures of every experiment that has stored results, and regenerate "
         "RESULTS.md from them. Nothing is trained.")


def _add_kernel(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="SPEC", help="the kernel spec (TOML: [model], [data], [kernel])")
    p.add_argument("--out", metavar="DIR", required=True,
                   help="output directory of the Gram store; must be new or empty unless --resume")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: written blocks are skipped; refused if the "
                        "data, model or kernel options changed")
    p.add_argument("--x64", action="store_true",
                   help="enable float64 in JAX (automatic with [kernel] compute = \"float64\")")


def _cmd_kernel(args: argparse.Namespace) -> int:
    """Gram matrix of a data set into a store: spec problems exit 2 (nothing written), a refused
    store 1; a tqdm bar over blocks (with ETA) when stderr is a terminal."""
    import time

    import numpy as np
    from tqdm import tqdm

    from rnn_ntk import store
    from rnn_ntk.kernels import gram
    from rnn_ntk.kernels.spec import KernelSpecError, load_kernel_spec
    setup_jax(args.x64)
    try:
        spec = load_kernel_spec(args.file)
    except KernelSpecError as e:
        _print_problems(e.problems)
        return EXIT_USAGE
    if spec.compute == "float64":
        setup_jax(x64=True)
    params = None
    if spec.method == "empirical":
        import jax

        from rnn_ntk.model import init_params
        params = init_params(spec.cfg, jax.random.key(spec.seed))
    bar = tqdm(total=None, unit="block", desc=spec.name, disable=None, file=sys.stderr,
               dynamic_ncols=True)

    def on_block(done: int, total: int) -> None:
        if bar.total is None:     # first report: blocks written before (--resume) are the start
            bar.total = total
            bar.initial = bar.n = bar.last_print_n = done
            bar.refresh()
            return
        bar.update(done - bar.n)

    t0 = time.perf_counter()
    try:
        res = gram(spec.cfg, spec.x, lengths=spec.lengths, kind=spec.kind,
                   method=spec.method, params=params, out=args.out, resume=args.resume,
                   block=spec.block, dtype=spec.dtype, order=spec.order, on_block=on_block,
                   info=spec.info)
    except store.StoreError as e:
        _err(str(e))
        return EXIT_FAIL
    finally:
        bar.close()
    data = Path(args.out) / "data.npz"
    if not data.exists():      # the inputs next to the Gram (rows 0..n_train-1: train)
        tmp = data.with_name(f".tmp-data-{os.getpid()}.npz")
        arrays = {"x": spec.x, "n_train": np.asarray(spec.n_train)}
        if spec.lengths is not None:
            arrays["lengths"] = spec.lengths
        if spec.y is not None:
            arrays["y"] = spec.y
        np.savez(tmp, **arrays)
        os.replace(tmp, data)
    arrays = res if isinstance(res, tuple) else (res,)
    shape = "x".join(map(str, arrays[0].shape))
    print(f"{spec.name}: {'/'.join(a.kind for a in arrays)} {shape} {arrays[0].dtype} in "
          f"{time.perf_counter() - t0:.1f} s -> {args.out} (open with "
          f"rnn_ntk.kernels.load_gram)")
    return EXIT_OK


register("kernel", "compute a data set's NTK/NNGP Gram matrix into a store (resumable)",
         _add_kernel, _cmd_kernel,
         "Read [model] (RNNConfig fields), [data] (path = a .npz with x (n, T, d) and optional "
         "lengths, y; or a task of the sweep specs) and [kernel] (kind ntk|nngp|both, method "
         "infinite|empirical, block, dtype, compute, seed), then write the Gram block by block "
         "to DIR (each block atomic; --resume skips written blocks and refuses changed inputs). "
         "Open it with rnn_ntk.kernels.load_gram(DIR); DIR/data.npz holds the inputs.")


def build_parser() -> argparse.ArgumentParser:
    from rnn_ntk import __version__
    parser = argparse.ArgumentParser(
        prog="rnn-ntk",
        description="Neural-tangent-kernel analysis of Elman RNNs: sweeps from TOML specs into "
                    "xarray/zarr result stores.",
        epilog="Exit status: 0 ok, 1 refused or failed, 2 invalid spec or arguments.")
    parser.add_argument("--version", action="version", version=f"rnn-ntk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description)
        cmd.add_arguments(p)
        p.set_defaults(_handler=cmd.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rnn-ntk``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._handler(args))
    except KeyboardInterrupt:
        _err("interrupted; finished chunks are kept (continue with --resume)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
