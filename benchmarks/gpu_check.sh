#!/usr/bin/env bash
# Populations on a GPU, in one prepared run of at most 5 minutes (a hard `timeout` inside):
#   1. runs per hour of the per-run path (`train()`, trainer=gpu) and of populations of K = 1, 16, 64, 256
#      chapter runs (fp32 and bf16), EPOCHS epochs each on SUBSET training images;
#   2. the counter-based mask streams on the device: the same numbers as on the CPU (exact integer
#      arithmetic), drawn for all members in one kernel per noise layer (no per-member launches);
#   3. equivalence on the GPU: a population of 1 vs `train()` with the noise off (same init, batch order
#      and layers: expected within float rounding; with noise on, their masks come from different
#      generators), a member of a population of 16 vs the same run alone (expected exact), and the mean test
#      accuracy of EQ_SEEDS seeds per-run vs as one population (paired difference, pp).
# Prints one table and a last machine-readable line; writes nothing outside a temporary folder.
#
#   bash benchmarks/gpu_check.sh                                   # on the GPU machine, from the repository root
#   TRAINER=cpu SIZES="1 4" EPOCHS=1 SUBSET=2000 EQ_SEEDS=2 bash benchmarks/gpu_check.sh   # a CPU dry run
#
# Environment: PYTHON (default .venv/bin/python, else python3), DROPOUT_LAB_DATA, TRAINER (gpu), SIZES
# ("1 16 64 256"), PRECISIONS ("fp32 bf16"), EPOCHS (3), SUBSET (0: all 50k), EQ_SEEDS (8), LIMIT_S (290).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export TRAINER=${TRAINER:-gpu} SIZES=${SIZES:-"1 16 64 256"} PRECISIONS=${PRECISIONS:-"fp32 bf16"}
export EPOCHS=${EPOCHS:-3} SUBSET=${SUBSET:-0} EQ_SEEDS=${EQ_SEEDS:-8}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout "${LIMIT_S:-290}" "$PYTHON" - <<'EOF'
import logging, os, statistics, tempfile, time
from pathlib import Path

import torch

from dropout_lab.config.compose import compose_train_config
from dropout_lab.models.counter_rng import MemberStreams
from dropout_lab.training.fit import RunSpec, train, train_population as _train_population

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
trainer, epochs, subset = os.environ["TRAINER"], int(os.environ["EPOCHS"]), int(os.environ["SUBSET"])
sizes = [int(k) for k in os.environ["SIZES"].split()]
precisions = os.environ["PRECISIONS"].split()
eq_seeds = int(os.environ["EQ_SEEDS"])
print(f"torch {torch.__version__}, cuda available {torch.cuda.is_available()}, "
      f"device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}; trainer={trainer}, "
      f"{epochs} epoch(s) on {subset or 50_000} training images", flush=True)
RATES = [0.1, 0.3, 0.5, 0.7]
tmp = tempfile.mkdtemp(prefix="gpu_check_")


def cfg(seed, *extra):
    base = ["experiment=chapter", f"trainer={trainer}", f"trainer.max_epochs={epochs}", "optuna.record=false",
            f"results_dir={tmp}", f"seed={seed}"]
    if subset:
        base.append(f"data.train_subset={subset}")
    return compose_train_config([*base, *extra])


def member(seed):  # the ex1 grid's rates, cycled
    return cfg(seed, f"model.dropout_1={RATES[seed % 4]}", f"model.dropout_2={RATES[(seed // 4) % 4]}")


def train_population(cfgs, precision="fp32"):  # each member writes its run.json into a folder of its own
    return _train_population([RunSpec(c, tempfile.mkdtemp(dir=tmp)) for c in cfgs], precision=precision)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def diff(a, b):
    keys = ("train_loss", "val_loss", "val_acc")
    return max([abs(x[k] - y[k]) for x, y in zip(a.curves, b.curves) for k in keys]
               + [abs(a.final[k] - b.final[k]) for k in a.final])


rows = []
train(cfg(0), Path(tmp) / "warm")  # CUDA context, data on the device, kernels: not timed
start = time.perf_counter(); rec = train(cfg(0), Path(tmp) / "per_run"); sync()
wall = time.perf_counter() - start
rows.append(("per-run", 1, "fp32", wall, 3600 / wall, rec.final["test_acc"]))
print(f"per-run: {wall:.1f} s per run, {3600 / wall:,.0f} runs/h", flush=True)
for precision in precisions:
    train_population([member(0)], precision=precision)  # kernels of this precision: not timed
    for K in sizes:
        cfgs = [member(s) for s in range(K)]
        sync(); start = time.perf_counter()
        results = train_population(cfgs, precision=precision); sync()
        wall = time.perf_counter() - start
        acc = statistics.fmean(r.final["test_acc"] for r in results if r.final)
        rows.append(("population", K, precision, wall, K * 3600 / wall, acc))
        print(f"population K={K} {precision}: {wall:.1f} s, {K * 3600 / wall:,.0f} runs/h, "
              f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0:.1f} GiB",
              flush=True)

# The mask streams on the device: the CPU's numbers, one kernel per draw for all members
device = "cuda" if torch.cuda.is_available() else "cpu"
streams_here, streams_cpu = MemberStreams(range(256), device), MemberStreams(range(256))
for streams in (streams_here, streams_cpu):
    streams.advance()
same_numbers = torch.equal(streams_here.uniform(0, (256, 256)).cpu(), streams_cpu.uniform(0, (256, 256)))
h = torch.ones(256, 256, 256, device=device)
threshold, scale = torch.full((256, 1, 1), 0.5, device=device), torch.full((256, 1, 1), 2.0, device=device)
streams_here.scale_by_mask(h, 0, threshold, scale); sync()
start = time.perf_counter()
for _ in range(20):
    streams_here.scale_by_mask(h, 0, threshold, scale)
sync(); mask_ms = (time.perf_counter() - start) / 20 * 1e3

# Equivalence
scratch = cfg(1, "model=scratch", "optim.momentum=0.9", "model.dropout_1=0", "model.dropout_2=0")
single = train(scratch, Path(tmp) / "scratch")
(alone,) = train_population([scratch])
one_vs_train = diff(alone, single)
mates = [member(s) for s in range(16)]
together = train_population(mates)
k_vs_one = max(diff(together[i], train_population([mates[i]])[0]) for i in (0, 7, 15))
seeds = [cfg(s) for s in range(eq_seeds)]
per_run = [train(c, Path(tmp) / f"eq{i}").final["test_acc"] for i, c in enumerate(seeds)]
pop = [r.final["test_acc"] for r in train_population(seeds)]
d = [a - b for a, b in zip(pop, per_run)]
mean_d = statistics.fmean(d) * 100
sd_d = (statistics.stdev(d) * 100) if len(d) > 1 else float("nan")

print("\n| engine | K | precision | wall s | runs per hour | mean test acc |")
print("| --- | ---: | --- | ---: | ---: | ---: |")
base = rows[0][4]
for name, K, precision, wall, rph, acc in rows:
    print(f"| {name} | {K} | {precision} | {wall:.1f} | {rph:,.0f} ({rph / base:.1f}x) | {acc:.4f} |")
print(f"\nmask streams on {device}: the CPU's numbers: {same_numbers}; 256 members x 256 x 256 masks in "
      f"{mask_ms:.2f} ms (one fused kernel)")
print(f"population of 1 vs train() (model=scratch, momentum 0.9, noise off): max abs diff {one_vs_train:.2e}")
print(f"member of 16 vs alone (3 members checked): max abs diff {k_vs_one:.2e}")
print(f"{eq_seeds} seeds, population - per-run test accuracy: {mean_d:+.2f} pp (sd {sd_d:.2f} pp)")
best = max(rows[1:], key=lambda r: r[4])
print(f"gpu_runs_per_hour_per_run={base:.0f} gpu_runs_per_hour_best={best[4]:.0f} best=K{best[1]}_{best[2]} "
      f"one_vs_train_max_abs_diff={one_vs_train:.2e} k_vs_one_max_abs_diff={k_vs_one:.2e} "
      f"paired_test_acc_diff_pp={mean_d:+.2f} streams_match_cpu={same_numbers} mask_ms_k256={mask_ms:.2f}")
EOF
