"""Which run configs may train as one population, and the stacked network that trains them.

Members share architecture, noise technique, epochs, batch size and data; each has its own seed,
dropout rates, learning rate, momentum and weight decay (``config/engine.py``). Member ``k`` is
independent of its mates: its initial weights come from a CPU generator seeded with its ``seed``,
drawn as ``nn.Linear`` draws them after ``torch.manual_seed(seed)``, and its noise from a
counter-based stream keyed by its ``seed`` (``models/counter_rng.py``; the same on every device), so
adding or removing members changes nobody else's numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf

from dropout_lab.config.engine import MEMBER_KEYS, MODEL_TECHNIQUES, NOISY_TARGET, is_member_key
from dropout_lab.config.targets import build
from dropout_lab.config.validate import validate_config
from dropout_lab.errors import InvalidValueError
from dropout_lab.models.stacked import StackedMLP


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """A run config as a plain dict, interpolations resolved."""
    return cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def check_population(cfgs: Sequence[DictConfig]) -> None:
    """Refuse configs that cannot train as one population, naming the field (``InvalidValueError``).

    Each config is first checked as a single run's is; then every config must equal the first
    except in :data:`MEMBER_KEYS` (and the bookkeeping keys ``name``, ``results_dir``, ``metric``,
    ``optuna``); the instruments and loggers of the per-run engine are refused.
    """
    if not cfgs:
        raise InvalidValueError("population", [], "at least one run config")
    for cfg in cfgs:
        validate_config(cfg)
        with torch.device("meta"):
            build(cfg, "model")  # the single run's checks of rates, widths and noise, without drawing weights
    first = _flat(resolved(cfgs[0]))
    for number, cfg in enumerate(cfgs[1:], start=1):
        flat = _flat(resolved(cfg))
        for key in sorted(first.keys() | flat.keys()):
            if not is_member_key(key) and first.get(key) != flat.get(key):
                raise InvalidValueError(key, flat.get(key), f"{first.get(key)!r} as in the population's first config "
                                        f"(run {number} differs): members may differ only in {', '.join(MEMBER_KEYS)}")
    cfg = cfgs[0]
    if cfg.model._target_ not in (*MODEL_TECHNIQUES, NOISY_TARGET):
        raise InvalidValueError("model._target_", cfg.model._target_, f"one of {[*MODEL_TECHNIQUES, NOISY_TARGET]}")
    for key in ("monitor.enabled", "test_time.enabled"):
        if OmegaConf.select(cfg, key):
            raise InvalidValueError(key, True, "false in a population (train this run per-run for its instruments)")
    if cfg.logger:
        raise InvalidValueError("logger", OmegaConf.to_container(cfg.logger),
                                "null in a population (each member's curves are in its record)")


def stacked_net(cfgs: Sequence[DictConfig], precision: str = "fp32") -> StackedMLP:
    """The network of a population of ``cfgs`` (checked with :func:`check_population` first), computing in
    ``precision``."""
    model = resolved(cfgs[0].model)
    technique = model["noise"] if model["_target_"] == NOISY_TARGET else MODEL_TECHNIQUES[model["_target_"]]
    return StackedMLP([int(c.seed) for c in cfgs], [c.model.dropout_1 for c in cfgs], [c.model.dropout_2 for c in cfgs],
                      num_hiddens_1=model["num_hiddens_1"], num_hiddens_2=model["num_hiddens_2"],
                      num_outputs=model["num_outputs"], noise=technique, noise_kwargs=model.get("noise_kwargs"),
                      compute_dtype=precision)
