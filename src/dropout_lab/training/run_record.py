"""The run record: everything a run produced, stored whole in its Optuna trial and copied to ``run.json``."""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import socket
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dropout_lab.config.engine import PER_RUN

RECORD_NAME = "run.json"
#: The trial user attribute that names the folder holding the run's ``run.json`` copy and logs.
OUTPUT_DIR_ATTR = "output_dir"

#: Keys that do not change what a run computes, so they are left out of the config hash.
#: ``monitor`` and ``test_time`` only measure: the monitor's noisy probe pass uses a forked RNG and
#: test-time evaluation runs after training, so neither changes the trained weights.
#: ``data.batches_per_call`` only groups the same optimizer steps, in the same order.
NON_SEMANTIC_KEYS = ("seed", "threads", "results_dir", "logger", "name", "metric", "optimized_metric",
                     "optuna", "instantiable",
                     "data.root", "data.system_dir", "data.download", "data.shuffle_seed", "data.batches_per_call",
                     "trainer.enable_progress_bar", "trainer.enable_model_summary",
                     "trainer.log_every_n_steps", "trainer.accelerator", "trainer.devices",
                     "monitor", "test_time")

#: Keys added after runs were stored, left out of the hash at the value that computes what those runs did,
#: so that their hashes stay valid. ``data.split=per_seed`` is in the hash: its runs still share one hash across
#: seeds (the split follows ``seed``, which is left out).
HASH_DEFAULTS = {"data.split": "fixed", "optim.schedule": "constant"}

VERSIONED_PACKAGES = ("torch", "torchvision", "lightning", "hydra-core", "optuna", "numpy")


def config_hash(cfg: DictConfig | dict) -> str:
    """Short stable hash of what a run computes, seed excluded: runs that differ only by seed share it."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else copy.deepcopy(dict(cfg))
    for dotted in (*NON_SEMANTIC_KEYS, *HASH_DEFAULTS):
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and (dotted not in HASH_DEFAULTS or node.get(leaf) == HASH_DEFAULTS[dotted]):
            node.pop(leaf, None)
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that determine a run's numbers."""
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        out[name] = version(name)
    return out


class Status(StrEnum):
    """How a run ended (``running`` while it trains); stored as its text value."""

    RUNNING = "running"
    COMPLETED = "completed"
    #: Stopped early by its pruner (a tuning trial).
    PRUNED = "pruned"
    #: Diverged (a non-finite training loss), or an error while it trained; ``reason`` says which.
    FAILED = "failed"
    #: Stopped by Ctrl-C or a termination signal; its trial is re-queued.
    INTERRUPTED = "interrupted"


@dataclass
class RunRecord:
    """Everything a run produced; ``status`` says how it ended (:class:`Status`), ``reason`` why if not completed.

    ``final``: validation and test metrics of the last epoch's weights. ``best``: the best-validation
    epoch (``epoch``, selected on the run's ``metric``), its validation metrics and the test metrics of
    its weights (``training/best_weights.py``); both are empty unless the run completed.

    ``engine`` says how it was trained: ``per-run`` (its own network), or ``population(K=8, fp32)``: as one
    of K members of a fused population, in float32 or bfloat16 (``training/fit.py``).
    """

    config: dict[str, Any]
    seed: int
    config_hash: str
    status: Status = Status.RUNNING
    reason: str | None = None
    curves: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    versions: dict[str, str] = field(default_factory=library_versions)
    host: str = field(default_factory=socket.gethostname)
    overrides: list[str] = field(default_factory=list)
    activations: list[dict[str, Any]] = field(default_factory=list)
    test_time: list[dict[str, Any]] = field(default_factory=list)
    engine: str = PER_RUN

    def __post_init__(self) -> None:
        self.status = Status(self.status)  # a record read back from JSON holds the text

    def write(self, folder: str | Path) -> Path:
        """Write ``run.json`` atomically into ``folder`` and return its path."""
        path = Path(folder) / RECORD_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=str))
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        """Load a record written by :meth:`write` (``path`` is the file or its folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / RECORD_NAME
        return cls(**json.loads(path.read_text()))

    def trial_attrs(self, output_dir: str | Path) -> dict[str, Any]:
        """The whole record as Optuna user attributes (JSON values), plus the folder of its ``run.json`` copy.

        Every writer (grid and tuning workers, recorded ``train`` runs, sweeper jobs) stores exactly these keys.
        """
        attrs = json.loads(json.dumps(asdict(self), default=str))
        attrs["wall_time_s"] = round(self.wall_time_s, 3)
        attrs[OUTPUT_DIR_ATTR] = str(output_dir)
        return attrs

    def value(self, column: str) -> float | None:
        """This run's ``column`` of the run table: ``best_X`` is ``X`` at its best-validation epoch (``best``),
        any other name the last epoch's (``final``); None where the run has none (it did not complete)."""
        source, name = (self.best, column.removeprefix("best_")) if column.startswith("best_") else (self.final, column)
        value = source.get(name)
        return None if value is None else float(value)

    @classmethod
    def from_trial_attrs(cls, attrs: dict[str, Any]) -> RunRecord:
        """The record a trial holds (the inverse of :meth:`trial_attrs`)."""
        return cls(**{name: attrs[name] for name in TRIAL_ATTR_KEYS if name in attrs})


#: The user attributes that hold a run record in its trial: the record's fields (``output_dir`` is stored beside them).
TRIAL_ATTR_KEYS = tuple(f.name for f in fields(RunRecord))

