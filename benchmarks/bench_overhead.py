"""Fixed costs that the full-run benchmark cannot separate from its noise, each measured in one process.

  (i)  Lightning's cost per optimizer step: the ``Classifier`` trained by ``lightning.Trainer`` (as
       ``train()`` builds it: manual optimization, ``NoProfiler``, no logger) on a model with almost
       no compute (``nn.Linear(1, 2)``, zero-valued batches of 256), with ``data.batches_per_call``
       1 and 16, against the hand-written loop over the same batches; microseconds per step.
  (ii) the activation monitor's cost per epoch: ``train()`` on the chapter setting with
       ``monitor.enabled`` off and on (its defaults: every 50 steps, a 512-image probe), alternating;
       median epoch seconds from ``run.json``'s curves.

Both alternate their configurations over ``--repeats`` repetitions; medians.

    python benchmarks/bench_overhead.py --readme benchmarks/README.md   # writes its section of benchmarks/README.md
    python benchmarks/bench_overhead.py --steps 200 --repeats 1 --monitor-epochs 1 --train-subset 2000  # prints it only
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_train import (  # noqa: E402 - needs HERE on sys.path
    _run_dropout_lab,
    add_readme_option,
    load_average,
    machine_info,
    publish_section,
)

BEGIN, END = "<!-- bench_overhead:begin -->", "<!-- bench_overhead:end -->"
BATCH = 256
GROUPS = (1, 16)


def step_costs(steps: int) -> dict[str, float]:
    """Seconds per optimizer step: hand-written loop, and Lightning with each ``batches_per_call``."""
    import lightning as L
    import torch
    import torch.nn.functional as F
    from torch import nn

    from dropout_lab.data.batches import MemberBatches
    from dropout_lab.training.classifier import Classifier
    from dropout_lab.training.profiler import NoProfiler
    from dropout_lab.training.run_record import RunRecord

    X, y = torch.zeros(steps * BATCH, 1), torch.zeros(steps * BATCH, dtype=torch.long)

    class Data(L.LightningDataModule):
        def __init__(self, per_call: int) -> None:
            super().__init__()
            self.per_call = per_call

        def train_dataloader(self) -> MemberBatches:
            return MemberBatches(X, y, BATCH, [0], self.per_call)

    def hand() -> float:
        net = nn.Linear(1, 2)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        start = time.perf_counter()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        for first in range(0, len(y), BATCH):
            idx = order[first:first + BATCH]
            Xb, yb = torch.index_select(X, 0, idx), torch.index_select(y, 0, idx)
            loss = F.cross_entropy(net(Xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - start

    def lightning(per_call: int) -> float:
        trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            deterministic=True, profiler=NoProfiler(), limit_val_batches=0)
        module = Classifier(nn.Linear(1, 2), [RunRecord(config={}, seed=0, config_hash="")], lr=[0.1], momentum=[0.0],
                            weight_decay=[0.0])
        start = time.perf_counter()
        trainer.fit(module, datamodule=Data(per_call))
        return time.perf_counter() - start

    out = {"hand": hand() / steps}
    for per_call in GROUPS:
        out[f"lightning_{per_call}"] = lightning(per_call) / steps
    return out


def monitor_epochs(args: argparse.Namespace) -> dict:
    """Epoch seconds of one run without and one with the activation monitor (bench_train's variant a and m)."""
    run = argparse.Namespace(epochs=args.monitor_epochs, seed=0, data_root=args.data_root, threads=args.threads,
                             train_subset=args.train_subset)
    plain, monitored = _run_dropout_lab(run), _run_dropout_lab(run, "monitor.enabled=true")
    return {False: [c["seconds"] for c in plain["curves"]], True: [c["seconds"] for c in monitored["curves"]],
            "rows": monitored["monitor_rows"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps per measurement in (i)")
    parser.add_argument("--monitor-epochs", type=int, default=2, help="epochs per run in (ii)")
    parser.add_argument("--train-subset", type=int, default=None, help="first N training images in (ii)")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the study-worker setting)")
    parser.add_argument("--data-root", default=os.environ.get("DROPOUT_LAB_DATA", str(ROOT / "data")))
    add_readme_option(parser)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    info, load_start, started = machine_info(), load_average(), dt.datetime.now(dt.UTC)
    steps: dict[str, list[float]] = {}
    epochs: dict[bool, list[float]] = {False: [], True: []}
    rows = 0
    for rep in range(args.repeats):
        for name, value in step_costs(args.steps).items():
            steps.setdefault(name, []).append(value)
        got = monitor_epochs(args)
        epochs[False] += got[False]
        epochs[True] += got[True]
        rows = got["rows"]
        print(f"  rep {rep + 1}: " + ", ".join(f"{k} {v[-1] * 1e6:.0f} us/step" for k, v in steps.items())
              + f"; epoch s monitor off {statistics.median(got[False]):.3f}, on {statistics.median(got[True]):.3f}",
              flush=True)
    us = {k: statistics.median(v) * 1e6 for k, v in steps.items()}
    off, on = statistics.median(epochs[False]), statistics.median(epochs[True])
    print(f"per step: hand {us['hand']:.0f} us, " + ", ".join(
        f"Lightning with batches_per_call={g} {us[f'lightning_{g}']:.0f} us (+{us[f'lightning_{g}'] - us['hand']:.0f})"
        for g in GROUPS))
    print(f"monitor: epoch s off {off:.3f}, on {on:.3f}, ratio {on / off:.3f}, {rows} rows")

    lines = [
        "## Fixed costs: Lightning per step, activation monitor per epoch",
        "",
        f"Generated by `python benchmarks/bench_overhead.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` on "
        f"{started:%Y-%m-%d %H:%M} UTC; {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
        f"{args.threads} torch thread(s); {args.repeats} alternating repetition(s), medians. Load average "
        f"at start {load_start}, at end {load_average()}.",
        "",
        f"**Per optimizer step** ({args.steps} steps on `nn.Linear(1, 2)` with zero batches of {BATCH}: almost "
        "no compute, so this is the loop's own cost):",
        "",
        "| loop | us per step | over hand-written |",
        "| --- | ---: | ---: |",
        f"| hand-written | {us['hand']:.0f} | - |",
        *(f"| `Classifier` + `lightning.Trainer`, `data.batches_per_call={g}` | {us[f'lightning_{g}']:.0f} "
          f"| +{us[f'lightning_{g}'] - us['hand']:.0f} |" for g in GROUPS),
        "",
        f"**Activation monitor** (`train()`, chapter setting, {args.train_subset or 50_000} training images, "
        f"{args.monitor_epochs} epoch(s) per run, monitor defaults: every 50 steps, 512-image probe; "
        f"{rows} rows per run): median epoch {off:.3f} s off, {on:.3f} s on: **{(on / off - 1) * 100:+.1f}% per "
        "epoch**.",
    ]
    publish_section(args.readme, BEGIN, END, "\n".join(lines))


if __name__ == "__main__":
    main()
