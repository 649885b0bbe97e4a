"""The private or unstable APIs of torch, Optuna and Hydra that dropout-lab relies on, in one place.

Each function wraps one assumption and ``tests/test_compat.py`` checks each, so an upgrade that breaks
one fails one test instead of a study. Imports are local: importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    import torch
    from hydra.core.override_parser.types import Override
    from optuna.storages import BaseStorage


def standard_gamma(concentration: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Gamma(concentration, 1) draws from ``generator``: what ``torch.distributions.Gamma.sample`` computes
    (it takes no generator; a population member must draw from its own)."""
    import torch

    return torch._standard_gamma(concentration, generator=generator)


def claim_trial(storage: BaseStorage, trial_id: int) -> bool:
    """Move a WAITING trial to RUNNING; False if another worker took it first.

    What ``Study.ask`` does to pop its queue, for a trial chosen by the caller (a population claims
    several compatible queued trials, not the oldest ones).
    """
    import optuna
    from optuna.trial import TrialState

    try:
        return bool(storage.set_trial_state_values(trial_id, state=TrialState.RUNNING))
    except (optuna.exceptions.UpdateFinishedTrialError, optuna.exceptions.StorageInternalError):
        return False


def running_trial(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """A ``Trial`` handle for a RUNNING trial of ``study`` claimed by ``claim_trial`` (or by a sweeper that
    launched this job), so that it can report, be pruned and be told like one from ``Study.ask``."""
    import optuna

    return optuna.Trial(study, trial_id)


def parse_overrides(overrides: Sequence[str], config_loader: Any = None) -> list[Override]:
    """Hydra's parser of its override grammar (``key=value``, ``+key``, ``~key``, sweeps), which every Hydra
    sweeper plugin uses; study files take field overrides in the same grammar."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create(config_loader=config_loader).parse_overrides(list(overrides))
