"""The one training path: a run trained on its own network, or K compatible runs as one fused population.

``train(cfg, output_dir)`` trains one run on the network its config names (the chapter's
``DropoutMLPScratch`` or ``DropoutMLPConcise``, ``NoisyMLP``, or a user's), with the optional
instruments (activation monitor, test-time evaluation, checkpoint); its record's ``engine`` is
``per-run``. ``train_population(runs)`` trains K runs as one :class:`~dropout_lab.models.stacked.StackedMLP`
in float32 or bfloat16; their ``engine`` is ``population(K=8, bf16)``. Both go through
:func:`fit_runs`: one :class:`~dropout_lab.training.classifier.Classifier`, one Lightning ``Trainer``,
the same epoch rows, divergence check, best-epoch selection and pruning (``epoch_end.py``), the same
test passes and the same records, each written to its ``run.json`` the moment its run ends.

A run's record says how it ended (:class:`~dropout_lab.training.run_record.Status`): ``completed``
(``final``: the last epoch's validation and test metrics; ``best``: those of its best-validation
epoch, whose weights are tested too), ``pruned``, ``failed`` (diverged, or an error while training,
named in ``reason``) or ``interrupted`` (Ctrl-C or SystemExit, which are re-raised after recording).
Bad configuration raises before anything is trained or written.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from dropout_lab.config.engine import PER_RUN, check_precision, engine_name
from dropout_lab.config.targets import build
from dropout_lab.config.validate import validate_config
from dropout_lab.errors import DropoutLabError, interrupt_behind
from dropout_lab.evaluation.checkpoint import save_checkpoint, split_tensors
from dropout_lab.evaluation.mc_evaluation import evaluate_test_time
from dropout_lab.training.activation_monitor import ActivationMonitor
from dropout_lab.training.best_weights import best_metrics, selection_metric
from dropout_lab.training.classifier import Classifier
from dropout_lab.training.epoch_end import EpochEnd, Pruning
from dropout_lab.training.population_net import check_population, resolved, stacked_net
from dropout_lab.training.profiler import NoProfiler
from dropout_lab.training.run_record import RunRecord, Status, config_hash

log = logging.getLogger(__name__)

QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.seed")
#: Refuse to start a run with less free space than this in its output folder.
MIN_FREE_BYTES = 50 * 2**20
#: Called once per run when it ends (left early, completed, or stopped by an exception), after its
#: ``run.json`` is written: ``on_finish(position in runs, record)``.
OnFinish = Callable[[int, RunRecord], None]


@dataclass
class RunSpec:
    """One run to train: its composed config, the folder of its ``run.json`` (and logs), its overrides."""

    cfg: DictConfig
    output_dir: str | Path
    overrides: list[str] = field(default_factory=list)


def quiet_lightning() -> None:
    """Lightning's start-up chatter (GPU/TPU available, tips) at WARNING, and without its hint to use ``srun`` on a
    host with SLURM installed: each run trains in one process, started by a worker or by submitit's job."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system but is not used")


def prepare_output_dir(folder: str | Path) -> Path:
    """Create the run's folder; fail clearly if it cannot be written or its disk is (nearly) full."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DropoutLabError(f"results folder {folder} cannot be written: {exc.strerror}") from None
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise DropoutLabError(f"results folder {folder} has only {free // 2**20} MiB free; "
                              f"at least {MIN_FREE_BYTES // 2**20} MiB are needed")
    return folder


def train(cfg: DictConfig, output_dir: str | Path, overrides: Sequence[str] = (),
          callbacks: Sequence[L.Callback] = (), prune: Pruning | None = None,
          on_finish: OnFinish | None = None) -> RunRecord:
    """Train one run on its own network; return its record (also in ``output_dir/run.json``)."""
    validate_config(cfg)
    (record,) = fit_runs([RunSpec(cfg, output_dir, list(overrides))], population=False, callbacks=callbacks,
                         prune=prune, on_finish=on_finish)
    return record


def train_population(runs: Sequence[RunSpec], precision: str = "fp32", callbacks: Sequence[L.Callback] = (),
                     prune: Pruning | None = None, on_finish: OnFinish | None = None) -> list[RunRecord]:
    """Train ``runs`` as one fused population in ``precision`` (``fp32``, or ``bf16``: matmuls and activations
    in bfloat16, weights cast once per step; weights, optimizer, noise constants and losses in float32);
    one record per run, in order."""
    check_precision(precision)
    check_population([run.cfg for run in runs])
    return fit_runs(runs, population=True, precision=precision, callbacks=callbacks, prune=prune,
                    on_finish=on_finish)


def fit_runs(runs: Sequence[RunSpec], *, population: bool, precision: str = "fp32",
             callbacks: Sequence[L.Callback] = (), prune: Pruning | None = None,
             on_finish: OnFinish | None = None) -> list[RunRecord]:
    """Train, validate every epoch and test (noise off) ``runs``, checked by the caller; see the module docstring."""
    cfgs = [run.cfg for run in runs]
    first = cfgs[0]
    folders = [prepare_output_dir(run.output_dir) for run in runs]
    engine = engine_name(len(runs), precision) if population else PER_RUN
    records = [RunRecord(config=resolved(cfg), seed=int(cfg.seed), config_hash=config_hash(cfg),
                         overrides=list(run.overrides), engine=engine) for run, cfg in zip(runs, cfgs, strict=True)]
    finished: set[int] = set()

    def finish(number: int) -> None:
        if number not in finished:
            finished.add(number)
            records[number].write(folders[number])
            if on_finish is not None:
                on_finish(number, records[number])

    if first.threads:
        torch.set_num_threads(first.threads)
    quiet_lightning()
    L.seed_everything(first.seed, verbose=False)
    monitor = (ActivationMonitor(first.monitor.every_n_steps, first.monitor.probe_size)
               if first.monitor.enabled else None)
    module: Classifier | None = None
    try:
        trainer, datamodule, module = _build(cfgs, records, population, precision,
                                             [EpochEnd(prune), *([monitor] if monitor else []), *callbacks])
        module.on_leave = finish
        trainer.fit(module, datamodule=datamodule)
        if trainer.interrupted:
            raise KeyboardInterrupt("training interrupted")
        if module.active:
            _test(trainer, module, datamodule, None if population else runs[0])
    except BaseException as exc:  # record why, including Ctrl-C and SystemExit
        interrupt = interrupt_behind(exc)
        if module is None and interrupt is None:
            raise  # refused while building (a target that cannot take its config): nothing trained or written
        cause = interrupt or exc
        for number, record in enumerate(records):
            if record.status is Status.RUNNING:
                status = Status.FAILED if interrupt is None else Status.INTERRUPTED
                record.status, record.reason = status, f"{type(cause).__name__}: {cause}"
                if module is not None:
                    module.end(number, status, record.reason)
        if interrupt is None and not isinstance(exc, DropoutLabError):  # a bug or unexpected error: keep its traceback
            log.exception("training of %d run(s) failed", len(runs))
        _finish_all(records, monitor, finish)
        if interrupt is not None:
            raise interrupt from None
    else:
        _finish_all(records, monitor, finish)
    return records


def _build(cfgs: Sequence[DictConfig], records: list[RunRecord], population: bool, precision: str,
           callbacks: list[L.Callback]) -> tuple[L.Trainer, Any, Classifier]:
    """The trainer, data module and Lightning module of ``cfgs`` (their first config's trainer and data)."""
    first = cfgs[0]
    datamodule = build(first, "data")
    net = stacked_net(cfgs, precision) if population else build(first, "model")
    options: dict[str, Any] = {} if first.trainer.get("profiler") else {"profiler": NoProfiler()}
    trainer = build(first, "trainer", logger=build(first, "logger") if first.logger else False, **options,
                    callbacks=callbacks)
    datamodule.shuffle_seeds = [int(cfg.data.shuffle_seed) for cfg in cfgs]
    datamodule.seeds = [int(cfg.seed) for cfg in cfgs]  # each member's split with data.split=per_seed
    if precision == "bf16":  # the net computes in bf16: gather the images as such
        datamodule.train_dtype = torch.bfloat16
    module = Classifier(net, records, lr=[c.optim.lr for c in cfgs], momentum=[c.optim.momentum for c in cfgs],
                        weight_decay=[c.optim.weight_decay for c in cfgs], metric=selection_metric(first.metric),
                        schedule=first.optim.get("schedule", "constant"))
    return trainer, datamodule, module


def _finish_all(records: list[RunRecord], monitor: ActivationMonitor | None, finish: Callable[[int], None]) -> None:
    """Every record not yet finished is written and handed on (the monitor's rows with a single run's)."""
    if monitor is not None:
        records[0].activations = monitor.rows
    for number in range(len(records)):
        finish(number)


def _test(trainer: L.Trainer, module: Classifier, datamodule: Any, alone: RunSpec | None) -> None:
    """Test the members still training on their last weights (and the instruments of a run ``alone`` on its own
    network), then on their best-validation weights where those differ; record ``final`` and ``best``."""
    trainer.test(module, datamodule=datamodule, verbose=False)
    last = module.tested
    if alone is not None:  # its checkpoint and test-time evaluation, on its last weights
        record, cfg = module.records[0], alone.cfg
        if cfg.test_time.checkpoint:
            save_checkpoint(module.net, record.config, alone.output_dir)
        if cfg.test_time.enabled:
            started = time.perf_counter()
            net = module.net.to(trainer.strategy.root_device)  # teardown moved it to the CPU
            record.test_time = evaluate_test_time(net, *split_tensors(datamodule.test_dataloader()),
                                                  T=cfg.test_time.T, seed=cfg.seed, batch_size=cfg.data.eval_batch_size)
            module.test_share += time.perf_counter() - started  # the run's wall time includes its instrument
    epochs = module.best.epochs
    best = last
    if any(epochs.get(n) not in (None, len(module.records[n].curves)) for n in module.active):
        module.best.restore(module.net)  # selection on validation: test the best epochs' weights too
        trainer.test(module, datamodule=datamodule, verbose=False)
        best = module.tested
    for row, number in enumerate(module.active):
        record = module.records[number]
        curve = record.curves[-1]
        record.final = {**{k: curve[k] for k in ("val_loss", "val_acc") if k in curve},
                        "test_loss": last["test_loss"][row], "test_acc": last["test_acc"][row]}
        epoch = epochs.get(number)
        if epoch is not None:
            tested = last if epoch == len(record.curves) else best
            record.best = best_metrics(record.curves[epoch - 1], {k: v[row] for k, v in tested.items()})
        module.end(number, Status.COMPLETED)
        log.info("seed %d: test_acc=%.4f test_loss=%.4f", record.seed, record.final["test_acc"],
                 record.final["test_loss"])
