"""Per-member training cost of a fused population vs. the single-run path, at K = 1, 4, 8, 16.

The chapter setting (784-256-256-10, p = 0.5/0.5, batch 256, SGD lr 0.1) on the 50k training split,
validation on 10k every epoch. Variants, interleaved in one process (``--repeats`` rounds):

  single concise / single scratch   ``train()`` (the per-run engine: the run on its own network)
                                    with ``model=concise`` (``nn.Dropout``) and ``model=scratch``
  population K                      ``train_population`` of K ``model=concise`` runs (seeds 0..K-1)
  population K bf16                 the same with ``precision="bf16"`` (bfloat16 matmuls, ``--bf16``;
                                    equivalence with fp32 runs: ``bench_population.py``'s TOST)

Seconds per epoch are the runs' ``curves[].seconds`` (training + validation; a population member's is
its share, the population's epoch time / K), averaged over epochs 2..E (epoch 1 warms up); the
ratios are single-run seconds over population seconds per member: how many more runs per hour.
Prints a table; no asserts.

    python benchmarks/bench_population_step.py                       # 2 threads, 2 epochs, K = 1 4 8 16
    python benchmarks/bench_population_step.py --sizes 1 4 --train-subset 5000 --epochs 2
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path


def _cfgs(args: argparse.Namespace, model: str, seeds: range, root: str) -> list:
    from dropout_lab.config.compose import compose_train_config

    base = [f"data.root={args.data_root}", f"trainer.max_epochs={args.epochs}", "trainer=cpu", f"model={model}",
            f"threads={args.threads}", "optuna.record=false", f"results_dir={root}"]
    if args.train_subset:
        base.append(f"data.train_subset={args.train_subset}")
    return [compose_train_config([*base, f"seed={seed}"]) for seed in seeds]


def _per_epoch(curves: list[dict]) -> float:
    seconds = [row["seconds"] for row in curves]
    return statistics.fmean(seconds[1:] or seconds)


def measure(args: argparse.Namespace, variant: tuple[str, int, bool], root: str) -> float:
    """Per-member seconds per epoch of one variant."""
    from dropout_lab.training.fit import RunSpec, train, train_population

    kind, K, bf16 = variant
    if kind.startswith("single"):
        (cfg,) = _cfgs(args, kind.split()[1], range(1), root)
        with tempfile.TemporaryDirectory(dir=root) as out:
            return _per_epoch(train(cfg, out).curves)
    with tempfile.TemporaryDirectory(dir=root) as out:
        runs = [RunSpec(cfg, Path(out) / str(k)) for k, cfg in enumerate(_cfgs(args, "concise", range(K), root))]
        results = train_population(runs, precision="bf16" if bf16 else "fp32")
    assert all(r.status == "completed" for r in results), [r.reason for r in results]
    return statistics.fmean(_per_epoch(r.curves) for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="also every K in bf16")
    parser.add_argument("--data-root", default=os.environ.get("DROPOUT_LAB_DATA", "data"))
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import torch

    torch.set_num_threads(args.threads)
    variants = [("single concise", 1, False), ("single scratch", 1, False),
                *(("population", K, False) for K in args.sizes),
                *(("population", K, True) for K in (args.sizes if args.bf16 else ()))]
    times: dict[tuple, list[float]] = {v: [] for v in variants}
    start, load_start = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.repeats):
            for variant in variants:
                times[variant].append(measure(args, variant, root))
    n = args.train_subset or 50_000
    print(f"\nper-member seconds per epoch (train + validation), {n} training images, {args.threads} threads, "
          f"epochs 2..{args.epochs} of {args.epochs}, median of {args.repeats} interleaved round(s), "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs; total {time.perf_counter() - start:.0f} s; "
          f"load average {' '.join(f'{x:.2f}' for x in load_start)} at start, "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at end")
    concise, scratch = (statistics.median(times[v]) for v in variants[:2])
    print(f"{'variant':<24} {'K':>3} {'s/epoch/member':>15} {'vs single concise':>18} {'vs single scratch':>18}")
    for variant in variants:
        kind, K, bf16 = variant
        s = statistics.median(times[variant])
        name = kind + (" bf16" if bf16 else "")
        print(f"{name:<24} {K:>3} {s:>15.3f} {concise / s:>17.2f}x {scratch / s:>17.2f}x")


if __name__ == "__main__":
    main()
