"""Fused populations vs. today's per-run path: the ex1 grid through ``study run``, FLOP/s, independence, TOST.

  (i)   Throughput. The ex1 grid (``experiment=chapter``, ``model.dropout_1`` x ``model.dropout_2`` in
        [0.1, 0.3, 0.5, 0.7]^2, ``--seeds`` seeds, ``--epochs`` epochs) is run by ``dropout-lab study run
        SPEC --jobs 2`` on a fresh results folder (its own SQLite store) per configuration:
          per-run          today's path (one run at a time per worker, cores / jobs threads each);
          population fp32  ``--population auto``;
          population bf16  ``--population auto --population-precision bf16``.
        Each population configuration first runs once untimed, for one epoch on a few images, so that its
        mask kernels are in torch's compile cache (as after a machine's first study; see ``warm_up``).
        The configurations alternate, ``--repeats`` times. For each: wall time from the command's start to
        its exit (worker start-up included), runs per hour, speedup over per-run, the achieved FLOP/s
        (the runs' matmul work: 1.61 MFLOP per training image and step, 0.54 MFLOP per validation and
        test image, for the epochs each run trained) as a fraction of the matmul peak measured below,
        and the peak RSS of each worker (``VmHWM`` of the processes under ``study run``, sampled).
  (ii)  Matmul peak, measured first in this process with all cores' threads, fp32 and bf16, at the
        chapter's shape (256 x 784 @ 784 x 256, as one matmul or 8 in a ``bmm``) and at 2048^3.
  (iii) Independence: a population of ``--members`` chapter runs (different seeds, rates, lr, momentum)
        vs. each of them alone (a population of 1), 2 epochs: the largest absolute difference of
        their curves and final metrics, fp32 and bf16.
  (iv)  Equivalence (TOST): ``--tost-seeds`` seeds of the chapter setting (``--tost-epochs`` epochs)
        each way, per-run (``train()``, the global RNG's masks) vs. population (fp32, bf16; counter-based
        masks), paired by seed, for each net of ``--tost-models``; two one-sided t-tests on the mean
        difference of test accuracy with a +-0.5 pp margin: p < 0.05 means equivalent within the margin.
  (v)   Where a population step's time goes: ``torch.profiler`` over chapter-shaped training steps of a
        population of ``--profile-members`` (bf16 and fp32, one worker's threads), operators grouped.
  (vi)  What a worker pays once: a fresh worker process's imports, its data, and its first population's
        extra time (kernel compilation) against its second; and what every population pays (Trainer and
        module construction), in ``bench_population_step``-sized populations.

Ends with one line: ``population_speedup=<x> independence_max_abs_diff=<d> tost_p=<p> bf16_peak_fraction=<f>``:
the speedup of the fastest population mode measured, the fp32 independence figure, that mode's largest TOST p
over the nets, and the bf16 populations' FLOP/s as a fraction of the bf16 matmul peak.

    python benchmarks/bench_population.py --readme benchmarks/README.md   # ex1 at full budget: 80 runs x 20 epochs
                                                                          # each way (~40 min), writes its section
    python benchmarks/bench_population.py --quick    # < 5 min: 16 cells x 1 seed x 3 epochs, TOST at 5 epochs;
                                                     # prints the section only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_sweep import timed_study_run  # noqa: E402
from bench_train import add_readme_option, load_average, machine_info, publish_section  # noqa: E402

if TYPE_CHECKING:
    from dropout_lab.training.run_record import RunRecord

BEGIN, END = "<!-- bench_population:begin -->", "<!-- bench_population:end -->"
RATES = [0.1, 0.3, 0.5, 0.7]
#: ``study run`` options of each configuration of (i).
CONFIGS = {
    "per-run": [],
    "fp32": ["--population", "auto"],
    "bf16": ["--population", "auto", "--population-precision", "bf16"],
}
MARGIN = 0.005  # 0.5 percentage points of test accuracy
VAL_IMAGES = TEST_IMAGES = 10_000


def forward_flops(h1: int = 256, h2: int = 256, inputs: int = 784, outputs: int = 10) -> int:
    """Multiply-adds x 2 of one image's forward pass through the MLP's three matmuls."""
    return 2 * (inputs * h1 + h1 * h2 + h2 * outputs)


def run_flops(record: dict, train_images: int) -> float:
    """The matmul work of one run: forward + backward (3x forward) per training image and epoch, one forward
    per validation image and epoch and per test image."""
    f = forward_flops(record["config"]["model"]["num_hiddens_1"], record["config"]["model"]["num_hiddens_2"])
    epochs = len(record["curves"])
    tested = TEST_IMAGES if record["status"] == "completed" else 0
    return f * (epochs * (3 * train_images + VAL_IMAGES) + tested)


# ----------------------------------------------------------------------------------------------
# (i) the grid through `study run`
# ----------------------------------------------------------------------------------------------

def grid_of(args: argparse.Namespace) -> dict[str, list[float]]:
    """The ex1 grid, or with ``--cells N`` < 16 the documented subset: the first N cells in row order,
    rounded up to whole rows of ``model.dropout_2`` values (N <= 4: one row of N)."""
    rows = max(1, math.ceil(args.cells / len(RATES)))
    return {"model.dropout_1": RATES[:rows], "model.dropout_2": RATES[:min(args.cells, len(RATES))]}


def grid_spec(args: argparse.Namespace) -> str:
    overrides = [f"data.train_subset={args.train_subset}"] if args.train_subset else []
    return json.dumps({"name": "bench_ex1", "question": "Population benchmark (benchmarks/bench_population.py).",
                       "experiment": "chapter", "overrides": overrides, "epochs": args.epochs, "grid": grid_of(args),
                       "seeds": list(range(args.seeds))})


def run_grid(args: argparse.Namespace, config: str, workdir: Path) -> dict:
    results = workdir / "results"
    wall, peaks = timed_study_run(grid_spec(args), "bench_ex1", workdir, args.data_root,  # JSON is YAML
                                  ["--jobs", str(args.jobs), *CONFIGS[config]])
    records = [json.loads(p.read_text()) for p in (results / "studies" / "bench_ex1").glob("trial_*/run.json")]
    train_images = args.train_subset or 50_000
    return {"wall_s": wall, "runs": len(records),
            "completed": sum(r["status"] == "completed" for r in records),
            "flops": sum(run_flops(r, train_images) for r in records),
            "engines": sorted({r.get("engine", "per-run") for r in records}),
            "worker_peaks_mib": peaks.worker_peaks_mib(),
            "test_acc": statistics.fmean(r["final"]["test_acc"] for r in records if r["final"])}


def warm_up(args: argparse.Namespace, configs: list[str], workdir: Path) -> None:
    """Run each population configuration's grid for one epoch on ``256 + last batch`` images, untimed: the
    populations' mask kernels get compiled for the grid's shapes (K, full and last batch, dtype) into torch's
    on-disk cache, as on any machine after its first study; a worker then only loads them (its first population's
    extra time in (vi))."""
    last = (args.train_subset or 50_000) % 256
    small = argparse.Namespace(**{**vars(args), "epochs": 1, "train_subset": 256 + last})
    for config in configs:
        start = time.perf_counter()
        run_grid(small, config, workdir / f"warm_up_{config}")
        print(f"  warm-up {config} (not timed): {time.perf_counter() - start:.1f} s", flush=True)


# ----------------------------------------------------------------------------------------------
# (ii) matmul peak
# ----------------------------------------------------------------------------------------------

def matmul_peak(dtype_name: str, shape: tuple[int, int, int], threads: int, seconds: float = 1.0) -> float:
    """Best of 3 timings of ``a @ b`` at ``shape`` (m, k, n), and of 8 such products as one ``bmm`` (what a
    population computes), in FLOP/s."""
    import torch

    torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    m, k, n = shape
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    A, B = torch.randn(8, m, k).to(dtype), torch.randn(8, k, n).to(dtype)
    best = 0.0
    for product, flops in ((lambda: a @ b, 2 * m * k * n), (lambda: torch.bmm(A, B), 16 * m * k * n)):
        for _ in range(5):
            product()
        for _ in range(3):
            count, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds / 6:
                product()
                count += 1
            best = max(best, flops * count / elapsed)
    return best


# ----------------------------------------------------------------------------------------------
# (iii) independence and (iv) TOST, in this process
# ----------------------------------------------------------------------------------------------

def _cfg(args: argparse.Namespace, root: str, epochs: int, *overrides: str):
    from dropout_lab.config.compose import compose_train_config

    base = ["experiment=chapter", f"trainer.max_epochs={epochs}", "trainer=cpu", f"threads={os.cpu_count()}",
            "optuna.record=false", f"data.root={args.data_root}", f"results_dir={root}"]
    if args.train_subset:
        base.append(f"data.train_subset={args.train_subset}")
    return compose_train_config([*base, *overrides])


MEMBER_OVERRIDES = [
    ["seed=0"], ["seed=1", "model.dropout_1=0.2", "optim.lr=0.05"],
    ["seed=2", "model.dropout_2=0.7", "optim.momentum=0.9"],
    ["seed=3", "model.dropout_1=0.3", "optim.weight_decay=0.001"], ["seed=4", "model.dropout_1=0.1", "optim.lr=0.2"],
    ["seed=5", "model.dropout_2=0.3"], ["seed=6", "optim.lr=0.15"], ["seed=7", "model.dropout_1=0.7"],
]


def max_difference(a: RunRecord, b: RunRecord) -> float:
    keys = ("train_loss", "val_loss", "val_acc")
    diffs = [abs(x[k] - y[k]) for x, y in zip(a.curves, b.curves, strict=True) for k in keys]
    return max(diffs + [abs(a.final[k] - b.final[k]) for k in a.final])


def _runs(root: str, name: str, cfgs: list) -> list:
    """RunSpecs of ``cfgs`` writing into fresh folders under ``root``."""
    from dropout_lab.training.fit import RunSpec

    return [RunSpec(cfg, Path(tempfile.mkdtemp(prefix=f"{name}_", dir=root))) for cfg in cfgs]


def independence(args: argparse.Namespace, root: str, precision: str) -> float:
    """Largest |difference| between a member trained in a population of ``--members`` and alone."""
    from dropout_lab.training.fit import train_population

    cfgs = [_cfg(args, root, 2, *o) for o in MEMBER_OVERRIDES[:args.members]]
    together = train_population(_runs(root, "together", cfgs), precision=precision)
    return max(max_difference(t, train_population(_runs(root, "alone", [c]), precision=precision)[0])
               for t, c in zip(together, cfgs, strict=True))


def tost(args: argparse.Namespace, root: str, modes: list[str], model: str) -> dict:
    """Per-run vs. population test accuracy of the chapter setting with ``model``, paired by seed, per mode.

    A pair shares its seed's initial weights and batch order; the per-run net draws its masks from the
    global RNG and the member from its counter-based stream, so a pair also differs by its masks.
    """
    from dropout_lab.analysis.stats import tost_paired
    from dropout_lab.training.fit import train, train_population

    seeds = range(args.tost_seeds)
    cfgs = [_cfg(args, root, args.tost_epochs, f"seed={s}", f"model={model}") for s in seeds]
    start = time.perf_counter()
    per_run = []
    for seed, cfg in zip(seeds, cfgs, strict=True):
        per_run.append(train(cfg, Path(root) / f"tost_{model}_{seed}").final["test_acc"])
    out = {"per-run": {"acc": per_run, "seconds": time.perf_counter() - start}}
    for mode in modes:
        start = time.perf_counter()
        results = train_population(_runs(root, f"tost_{mode}", cfgs), precision=mode)
        acc = [r.final["test_acc"] for r in results]
        result = tost_paired([a - b for a, b in zip(acc, per_run, strict=True)], MARGIN)
        out[mode] = {"acc": acc, "seconds": time.perf_counter() - start, "n": result["n"], "diff": result["mean_diff"],
                     "ci90": (result["ci_low"], result["ci_high"]), "p": result["p_value"]}
    return out


# ----------------------------------------------------------------------------------------------
# (v) where a population step's time goes
# ----------------------------------------------------------------------------------------------

#: Operator groups of the profile (the first group whose pattern is in an operator's name takes its self time).
PROFILE_GROUPS = (
    ("matmuls (bmm, baddbmm)", ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm")),
    ("noise masks (fused counter-based kernel)", ("CompiledFxGraph", "Torch-Compiled Region", "TorchDynamo",
                                                  "_MaskedScale", "aten::bitwise", "aten::arange")),
    ("dtype casts (weights, gradients, logits)", ("aten::copy_", "aten::_to_copy", "aten::to")),
    ("loss (log-softmax, NLL)", ("softmax", "nll_loss")),
    ("optimizer (per-member SGD)", ("aten::addcmul_", "aten::mul_", "aten::add_", "Optimizer.")),
    ("ReLU and other elementwise", ("relu", "threshold", "clamp", "aten::mul", "aten::where", "aten::add")),
)


def profile_step(precision: str, members: int, threads: int, steps: int = 30) -> dict[str, float]:
    """Milliseconds per training step of a ``members``-member chapter population by operator group (and ``total``)."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from dropout_lab.models.stacked import StackedMLP
    from dropout_lab.training.optim import MemberSGD

    torch.set_num_threads(threads)
    K, batch = members, 256
    net = StackedMLP(list(range(K)), [0.5] * K, [0.5] * K, compute_dtype=precision).train()
    optimizer = MemberSGD(net.parameters(), [0.1] * K, [0.0] * K, [0.0] * K)
    X = torch.rand(K, batch, 784).to(net.compute_dtype)
    y = torch.randint(0, 10, (K, batch))

    def step() -> None:
        losses = F.cross_entropy(net(X).float().reshape(K * batch, -1), y.reshape(-1), reduction="none")
        optimizer.zero_grad(set_to_none=True)
        losses.view(K, batch).mean(1).sum().backward()
        optimizer.step()

    for _ in range(10):  # warm-up: kernel compilation, allocator
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    total = (time.perf_counter() - start) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    groups = {name: 0.0 for name, _ in PROFILE_GROUPS} | {"other": 0.0}
    for event in prof.key_averages():
        name = next((g for g, patterns in PROFILE_GROUPS if any(p in event.key for p in patterns)), "other")
        groups[name] += event.self_cpu_time_total / 1e3 / steps
    profiled = sum(groups.values())
    return {name: total * 1e3 * ms / profiled for name, ms in groups.items()} | {"total": total * 1e3}


# ----------------------------------------------------------------------------------------------
# (vi) what a worker pays once, and what every population pays
# ----------------------------------------------------------------------------------------------

WORKER_CHILD = """
import json, sys, time
start = time.perf_counter()
from dropout_lab.config.compose import compose_train_config
from dropout_lab.training.fit import RunSpec, train_population
imported = time.perf_counter() - start
args = json.loads(sys.argv[1])
out = {"imports_s": imported, "populations": []}
for population in range(2):
    common = ["experiment=chapter", "trainer.max_epochs=1", "trainer=cpu", f"threads={args['threads']}",
              "optuna.record=false", f"data.root={args['data_root']}", f"results_dir={args['root']}",
              f"data.train_subset={args['train_subset']}"]
    cfgs = [compose_train_config([*common, f"seed={population * 100 + k}"])
            for k in range(args["members"])]
    runs = [RunSpec(cfg, f"{args['root']}/worker_{population}_{k}") for k, cfg in enumerate(cfgs)]
    begin = time.perf_counter()
    records = train_population(runs, precision=args["precision"])
    wall = time.perf_counter() - begin
    epochs = sum(row["seconds"] for row in records[0].curves) * len(records)
    out["populations"].append({"wall_s": wall, "epochs_s": epochs})
print(json.dumps(out))
"""


def worker_costs(args: argparse.Namespace, root: str, precision: str, members: int, threads: int) -> dict:
    """A fresh worker process: its imports, then two populations of ``members`` (1 epoch on ``train_subset``
    images): the first one's extra wall time over the second is what a worker pays once (data read, kernels
    compiled); a population's wall time beyond its epochs is what every population pays (Trainer, module, tests)."""
    import subprocess

    payload = json.dumps({"threads": threads, "data_root": args.data_root, "root": root, "members": members,
                          "train_subset": 5000, "precision": precision})
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WORKER_CHILD, payload], capture_output=True, text=True, check=True)
    process = time.perf_counter() - start
    result = json.loads(done.stdout.strip().splitlines()[-1])
    first, second = result["populations"]
    return {"process_s": process, "imports_s": result["imports_s"], "first_s": first["wall_s"],
            "second_s": second["wall_s"], "once_s": first["wall_s"] - second["wall_s"],
            "per_population_s": second["wall_s"] - second["epochs_s"], "epochs_s": second["epochs_s"]}


# ----------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="under 5 minutes: see the defaults it sets")
    parser.add_argument("--cells", type=int, default=16, help="first N of the 16 ex1 cells")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train-subset", type=int, default=0, help="training images per run (0: all 50k)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--configs", default="per-run,fp32,bf16", help="comma list of: " + ", ".join(CONFIGS))
    parser.add_argument("--members", type=int, default=4, help="population size of the independence check")
    parser.add_argument("--tost-seeds", type=int, default=10)
    parser.add_argument("--tost-epochs", type=int, default=10)
    parser.add_argument("--tost-models", default="scratch,concise", help="comma list of chapter nets for the TOST")
    parser.add_argument("--profile-members", type=int, default=8, help="population size of the step profile")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: grid, independence, tost, "
                                                   "profile, worker")
    parser.add_argument("--data-root", default=os.environ.get("DROPOUT_LAB_DATA", "/usr/share/datasets/fashion-mnist"))
    add_readme_option(parser)
    args = parser.parse_args()
    if args.quick:  # 16 cells x 1 seed x 3 epochs, and a 5-epoch TOST
        args.seeds, args.epochs, args.tost_epochs = 1, 3, 5
    args.data_root = str(Path(args.data_root).resolve())
    configs = [c for c in args.configs.split(",") if c]
    modes = [c for c in configs if c != "per-run"] or ["fp32"]
    skip = set(filter(None, args.skip.split(",")))
    import logging

    import torch

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    info, load_start, started = machine_info(), load_average(), dt.datetime.now(dt.UTC)
    cells = math.prod(len(v) for v in grid_of(args).values())
    n_runs = cells * args.seeds
    print(f"bench_population: ex1 grid {n_runs} runs x {args.epochs} epoch(s) on {args.train_subset or 50_000} "
          f"images, configs {configs}, {args.repeats} repetition(s); load average {load_start}", flush=True)

    threads = os.cpu_count() or 1
    peaks = {(dtype, shape): matmul_peak(dtype, shape, threads) for dtype in ("fp32", "bf16")
             for shape in ((256, 784, 256), (2048, 2048, 2048))}
    print("matmul peak, " + ", ".join(f"{d} {s[0]}x{s[1]}@{s[1]}x{s[2]}: {v / 1e9:.0f} GFLOP/s"
                                      for (d, s), v in peaks.items()), flush=True)
    grid: dict[str, list[dict]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="bench_population_") as tmp:
        if "grid" not in skip:
            warm_up(args, [c for c in configs if c != "per-run"], Path(tmp))
            for rep in range(args.repeats):
                for config in configs:
                    r = run_grid(args, config, Path(tmp) / f"{config}_{rep}")
                    grid[config].append(r)
                    print(f"  rep {rep + 1} {config}: {r['wall_s']:.1f} s, {r['runs']} runs ({r['completed']} "
                          f"completed), engines {r['engines']}, mean test acc {r['test_acc']:.4f}, worker peak RSS "
                          f"{[round(x) for x in r['worker_peaks_mib']]} MiB", flush=True)
        torch.set_num_threads(threads)
        indep = {} if "independence" in skip else {m: independence(args, tmp, m) for m in ("fp32", "bf16")}
        for mode, diff in indep.items():
            print(f"independence ({mode}, {args.members} members vs alone, 2 epochs): max abs diff {diff:.2e}",
                  flush=True)
        equivalence = {} if "tost" in skip else {model: tost(args, tmp, modes, model)
                                                 for model in args.tost_models.split(",") if model}
        worker_threads = max(1, threads // args.jobs)
        profiles = {} if "profile" in skip else {m: profile_step(m, args.profile_members, worker_threads)
                                                 for m in ("bf16", "fp32")}
        for mode, prof in profiles.items():
            print(f"profile ({mode}, K={args.profile_members}, {worker_threads} thread(s)): "
                  + ", ".join(f"{k} {v:.2f} ms" for k, v in prof.items()), flush=True)
        workers = {} if "worker" in skip else {m: worker_costs(args, tmp, m, args.profile_members, worker_threads)
                                               for m in modes}
        for mode, costs in workers.items():
            print(f"worker ({mode}): " + ", ".join(f"{k} {v:.2f}" for k, v in costs.items()), flush=True)
    load_end = load_average()

    lines = [
        "## Populations: the ex1 grid per-run vs. fused populations",
        "",
        f"Generated by `python benchmarks/bench_population.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` "
        f"on {started:%Y-%m-%d %H:%M} UTC. Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}. "
        f"Load average (1/5/15 min) at start {load_start}, at end {load_end}.",
        "",
    ]
    speedups: dict[str, float] = {}
    peak_fractions: dict[str, float] = {}
    if grid.get("per-run") and "grid" not in skip:
        base = statistics.median(r["wall_s"] for r in grid["per-run"])
        lines += [
            f"**Grid**: `dropout-lab study run SPEC --jobs {args.jobs} [options]`, fresh store each, {n_runs} runs "
            f"(`experiment=chapter`, {args.epochs} epochs on {args.train_subset or 'all 50k'} training images, "
            f"{cells} cells of `model.dropout_1` x `model.dropout_2` x {args.seeds} seed(s)); wall time "
            "from the command's start to its exit, after an untimed warm-up that put the populations' mask kernels "
            "into torch's compile cache (as after a machine's first study). FLOP/s: the runs' matmul work over "
            "the wall time, as a fraction of the matmul peak at the chapter's shape with all cores (fp32 peak for "
            "fp32 rows, bf16 for bf16).",
            "",
            "| engine | options | wall s | runs per hour | speedup | GFLOP/s | of peak | mean test acc "
            "| peak RSS per worker MiB |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for config, rs in grid.items():
            wall = statistics.median(r["wall_s"] for r in rs)
            flops = statistics.median(r["flops"] / r["wall_s"] for r in rs)
            peak = peaks[("bf16" if config == "bf16" else "fp32", (256, 784, 256))]
            speedup = statistics.median(b["wall_s"] / r["wall_s"] for b, r in zip(grid["per-run"], rs, strict=True))
            speedups[config] = speedup
            peak_fractions[config] = flops / peak
            peaks_text = ", ".join(f"{x:.0f}" for x in rs[-1]["worker_peaks_mib"])
            lines.append(f"| {', '.join(rs[-1]['engines'])} | `{' '.join(CONFIGS[config]) or '(none)'}` | {wall:.1f} | "
                         f"{n_runs * 3600 / wall:,.0f} | {speedup:.2f}x | {flops / 1e9:.1f} | {flops / peak:.0%} | "
                         f"{statistics.median(r['test_acc'] for r in rs):.4f} | {peaks_text} |")
            print(f"{config}: {wall:.1f} s, {n_runs * 3600 / wall:,.0f} runs/h, speedup {speedup:.2f}x over per-run, "
                  f"{flops / 1e9:.1f} GFLOP/s = {flops / peak:.0%} of the {'bf16' if config == 'bf16' else 'fp32'} "
                  f"peak at the chapter's shape, per-run base {base:.1f} s")
        lines.append("")
    lines += ["**Matmul peak** (this process, " + f"{os.cpu_count()} threads): "
              + "; ".join(f"{d} {s[0]}x{s[1]} @ {s[1]}x{s[2]}: {v / 1e9:.0f} GFLOP/s" for (d, s), v in peaks.items())
              + ".", ""]
    if indep:
        lines += [f"**Independence** ({args.members} chapter runs with different seeds, rates, lr, momentum and "
                  "weight decay, 2 epochs, trained together vs. each alone in a population of 1): largest absolute "
                  "difference of the per-epoch train loss, validation loss and accuracy and the final metrics: "
                  + ", ".join(f"{m} **{d:.1e}**" for m, d in indep.items()) + " (target for fp32: <= 1e-4).", ""]
    if equivalence:
        lines += [
            f"**Equivalence (TOST)**: {args.tost_seeds} seeds of the chapter setting ({args.tost_epochs} epochs on "
            f"{args.train_subset or 'all 50k'} training images) each way, per-run `train()` vs. a population of "
            f"{args.tost_seeds}, paired by seed; margin +-{MARGIN * 100:.1f} pp of test accuracy. A pair shares "
            "its seed's initial weights and batch order; its masks differ (the per-run net draws from the global "
            "RNG, `dropout_layer`'s or `nn.Dropout`'s, a member from its counter-based stream), so a pair also "
            "differs by seed-to-seed mask noise.",
            "",
            "| net | mode | mean test acc | per-run mean | difference pp | 90% CI pp | TOST p | equivalent |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for model, by_mode in equivalence.items():
            base_acc = statistics.fmean(by_mode["per-run"]["acc"])
            for mode in modes:
                e = by_mode[mode]
                lines.append(f"| {model} | population {mode} | {statistics.fmean(e['acc']):.4f} | {base_acc:.4f} | "
                             f"{e['diff'] * 100:+.2f} | [{e['ci90'][0] * 100:+.2f}, {e['ci90'][1] * 100:+.2f}] | "
                             f"{e['p']:.2g} | {'yes' if e['p'] < 0.05 else 'no'} |")
                print(f"TOST {model} {mode}: diff {e['diff'] * 100:+.2f} pp, 90% CI [{e['ci90'][0] * 100:+.2f}, "
                      f"{e['ci90'][1] * 100:+.2f}] pp, p = {e['p']:.3g} (per-run "
                      f"{by_mode['per-run']['seconds']:.0f} s, population {e['seconds']:.0f} s)")
        lines.append("")
    if profiles:
        lines += [
            f"**Where a step goes** (`torch.profiler`, a population of {args.profile_members} chapter members, batch "
            f"256, {worker_threads} thread(s) as one of {args.jobs} workers; self time by operator group, scaled to "
            "the step's wall time):",
            "",
            "| operator group | " + " | ".join(f"{m} ms per step | {m} share" for m in profiles) + " |",
            "| --- | " + " | ".join("---: | ---:" for _ in profiles) + " |",
        ]
        for group in [name for name, _ in PROFILE_GROUPS] + ["other", "total"]:
            cells = " | ".join(f"{prof[group]:.2f} | {prof[group] / prof['total']:.0%}" for prof in profiles.values())
            lines.append(f"| {group} | {cells} |")
        lines.append("")
    if workers:
        lines += [
            f"**What a worker pays once, and each population** (a fresh worker process, {worker_threads} thread(s), "
            f"two populations of {args.profile_members} in a row, 1 epoch on 5,000 images each): process start and "
            "imports; the first population's extra wall time over the second (data read, kernels compiled); the "
            "second population's time beyond its epoch (Trainer and module construction, test passes).",
            "",
            "| mode | process s | imports s | first population s | second population s | once per worker s "
            "| per population s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for mode, c in workers.items():
            lines.append(f"| {mode} | {c['process_s']:.1f} | {c['imports_s']:.1f} | {c['first_s']:.1f} | "
                         f"{c['second_s']:.1f} | {c['once_s']:.1f} | {c['per_population_s']:.1f} |")
        lines.append("")
    publish_section(args.readme, BEGIN, END, "\n".join(lines))
    population_modes = [m for m in modes if m in speedups]
    best = max(population_modes, key=lambda m: speedups[m]) if population_modes else modes[0]
    tost_p = max((e.get(best, {}).get("p", float("nan")) for e in equivalence.values()), default=float("nan"))
    print(f"population_speedup={speedups.get(best, float('nan')):.2f} "
          f"independence_max_abs_diff={indep.get('fp32', float('nan')):.2e} tost_p={tost_p:.3g} "
          f"bf16_peak_fraction={peak_fractions.get('bf16', float('nan')):.2f}")


if __name__ == "__main__":
    main()
