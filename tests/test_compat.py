"""One test per assumption ``dropout_lab/compat.py`` makes about a private or unstable API of torch, Optuna or Hydra:
after an upgrade, the broken assumption fails here, not in a study."""

from __future__ import annotations

import optuna
import torch
from optuna.trial import TrialState

from dropout_lab.compat import claim_trial, parse_overrides, running_trial, standard_gamma

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_standard_gamma_draws_gamma_k_1_from_the_given_generator() -> None:
    k = torch.full((200_000,), 3.0)
    a = standard_gamma(k, torch.Generator().manual_seed(1))
    b = standard_gamma(k, torch.Generator().manual_seed(1))
    c = standard_gamma(k, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)  # the generator's stream, nothing global
    assert abs(a.mean().item() - 3.0) < 0.02 and abs(a.var().item() - 3.0) < 0.06  # Gamma(k, 1): mean = var = k
    torch.manual_seed(5)
    expected = torch.distributions.Gamma(torch.tensor(3.0), torch.tensor(1.0)).sample((10,))
    torch.manual_seed(5)
    assert torch.equal(standard_gamma(torch.full((10,), 3.0), None), expected)  # None: the global RNG, as Gamma


def _study_with_a_queued_trial() -> tuple[optuna.Study, optuna.storages.BaseStorage, int]:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction="maximize")
    study.enqueue_trial({"x": 1.0})
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), 0)
    return study, storage, trial_id


def test_claim_trial_moves_a_waiting_trial_to_running_once() -> None:
    study, storage, trial_id = _study_with_a_queued_trial()
    assert storage.get_trial(trial_id).state == TrialState.WAITING
    assert claim_trial(storage, trial_id) is True
    assert storage.get_trial(trial_id).state == TrialState.RUNNING
    assert claim_trial(storage, trial_id) is False  # someone else's claim now: refused, no exception


def test_running_trial_is_a_handle_that_suggests_reports_prunes_and_is_told() -> None:
    study, storage, trial_id = _study_with_a_queued_trial()
    claim_trial(storage, trial_id)
    trial = running_trial(study, trial_id)
    assert trial.suggest_float("x", 0.0, 2.0) == 1.0  # the queued value
    trial.report(0.5, step=0)
    assert trial.should_prune() in (True, False)
    study.tell(trial, 0.75)
    (done,) = study.get_trials(states=(TrialState.COMPLETE,))
    assert done.value == 0.75 and done.intermediate_values == {0: 0.5} and done.params == {"x": 1.0}


def test_parse_overrides_reads_hydras_override_grammar() -> None:
    plain, added, deleted, sweep, listed = parse_overrides(["a.b=1", "+c=x", "~d", "e=1,2", "f=[0,1]"])
    assert (plain.key_or_group, plain.value()) == ("a.b", 1) and not plain.is_sweep_override()
    assert added.is_add() and added.value() == "x" and deleted.is_delete()
    assert sweep.is_sweep_override() and list(sweep.sweep_iterator()) == [1, 2]
    assert listed.value() == [0, 1] and not listed.is_sweep_override()
