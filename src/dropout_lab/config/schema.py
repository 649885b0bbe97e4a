"""Structured-config schemas: a misspelt key or a wrongly typed value fails when Hydra composes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING

#: The metrics a run may optimise and select on (validation split only), with their direction.
METRICS: dict[str, Literal["minimize", "maximize"]] = {"val_acc": "maximize", "val_loss": "minimize"}


@dataclass
class DataConfig:
    """Fashion-MNIST location, split and batching (see ``FashionMNISTDataModule``).

    ``split``: ``fixed`` holds out the same ``val_size`` training images for every run (drawn with
    ``split_seed``); ``per_seed`` draws each run's train/validation split with the run's own ``seed``,
    so that seeds sample the split too.
    """

    _target_: str = MISSING  # conf/data: dropout_lab.data.FashionMNISTDataModule
    root: str | None = "${oc.env:DROPOUT_LAB_DATA,null}"
    system_dir: str | None = "/usr/share/datasets/fashion-mnist"
    download: bool = True
    batch_size: int = 256
    eval_batch_size: int = 2000
    val_size: int = 10_000
    split: str = "fixed"
    split_seed: int = 0
    validate_on_test: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    shuffle_seed: int = II("seed")
    batches_per_call: int = 16


@dataclass
class ModelConfig:
    """One of the chapter's MLPs; ``_target_`` is set by the ``model/`` group (or the ``noise/`` group).

    ``noise`` names a technique of ``dropout_lab.models.NOISE_TECHNIQUES`` (``NoisyMLP`` only; null
    for the chapter nets), applied at rate ``dropout_k`` after hidden layer k, with ``noise_kwargs``;
    or it is a ``_target_`` config with ``_partial_: true`` that builds a technique from its rate
    (a user's own, allowed by ``instantiable``). A user's network (``_target_``) gets these fields.
    """

    _target_: str = MISSING
    num_hiddens_1: int = 256
    num_hiddens_2: int = 256
    dropout_1: float = 0.5
    dropout_2: float = 0.5
    num_outputs: int = 10
    noise: Any = None
    noise_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Plain SGD, as in the chapter; ``schedule``: the chapter's ``constant`` learning rate, or ``cosine``
    (annealed from ``lr`` towards 0 over ``trainer.max_epochs``, one step per epoch)."""

    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"


@dataclass
class TrainerConfig:
    """Arguments of ``lightning.Trainer`` that dropout-lab exposes."""

    _target_: str = "lightning.Trainer"
    max_epochs: int = 10
    accelerator: str = "auto"
    devices: int = 1
    deterministic: bool = True
    enable_checkpointing: bool = False
    enable_progress_bar: bool = False
    enable_model_summary: bool = False
    num_sanity_val_steps: int = 0
    log_every_n_steps: int = 50


@dataclass
class OptunaTrialConfig:
    """Where the run is stored as an Optuna trial.

    ``record`` (default on) stores every run in study ``study`` (default: the run's ``name``) of
    ``storage`` (default: SQLite under ``results_dir``), and skips a run whose config and seed are
    already complete there. ``trial`` and ``heartbeat`` (seconds between the job's beats for its trial)
    are set by ``hydra/sweeper=optuna``; the job's pruner is the one the sweeper recorded in the study.
    With the sweeper's ``population`` above 1, a job trains the trials numbered ``population_trials`` as
    one fused population in ``population_precision`` instead of one ``trial``.
    """

    record: bool = True
    storage: str | None = None
    study: str | None = None
    trial: int | None = None
    heartbeat: int | None = None
    population_trials: list[int] | None = None
    population_precision: str = "fp32"


@dataclass
class MonitorConfig:
    """Activation statistics before/after the noise (``ActivationMonitor``): every N training steps and per epoch."""

    enabled: bool = False
    every_n_steps: int = 50
    probe_size: int = 512


@dataclass
class TestTimeConfig:
    """Test-time evaluation after training: noise off, single noisy passes, MC averages over T passes."""

    enabled: bool = False
    T: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50, 100])
    checkpoint: bool = False


@dataclass
class TrainConfig:
    """The whole run: what ``dropout-lab train`` composes."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Any = None
    seed: int = 0
    threads: int | None = None
    results_dir: str = "${oc.env:DROPOUT_LAB_RESULTS,results}"
    metric: str = "val_acc"
    #: lightning-hydra-template's name for ``metric`` (``hparams_search`` files set it); when set, it wins.
    optimized_metric: str | None = None
    name: str = "train"
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    test_time: TestTimeConfig = field(default_factory=TestTimeConfig)
    optuna: OptunaTrialConfig = field(default_factory=OptunaTrialConfig)
    #: Extra ``_target_`` patterns runs may instantiate (``[mypkg.*]``), see ``config/targets.py``.
    instantiable: list[str] = field(default_factory=list)


@dataclass
class WorkerConfig:
    """A study worker (``dropout-lab worker``): launch many with ``--multirun`` and any Hydra launcher."""

    study: str = MISSING
    storage: str | None = None
    results_dir: str = "${oc.env:DROPOUT_LAB_RESULTS,results}"
    threads: int = 1
    heartbeat: int = 30
    worker: int = 0
    overrides: list[str] = field(default_factory=list)
    #: ``1``: one run at a time (per-run); ``K`` or ``auto``: up to K compatible runs as one fused population.
    population: str = "1"
    #: ``fp32`` or ``bf16`` (bfloat16 matmuls and activations, float32 weights) for populations.
    population_precision: str = "fp32"
    #: Workers sharing the study on this host (``auto`` splits memory and queue between them).
    workers: int = 1


def register_schemas() -> None:
    """Make the schemas available to the defaults lists of ``conf/train.yaml`` and ``conf/worker.yaml``."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig, replace=True)
    store.store(name="worker_schema", node=WorkerConfig, replace=True)
