"""``study run`` of a sequential seed design: add seeds in batches until every declared comparison is decided.

A study whose ``seeds`` is a design ``{first, min, max, batch}`` runs look by look. Look k holds the
design's first n_k seeds (n_1 = min, then batch more each look, up to max). At each look the runs of
its seeds are trained (a batch of new seeds per cell: one fused population per batch with
``--population``), then the declared plan is evaluated on the stored runs
(``analysis.plan_verdicts``: anytime-valid confidence sequences, so looking after every batch keeps
the verdicts valid). The study stops at the first look where every comparison is decided, or at max.

The workers start once, at the first look with runs to train, and stay until the study stops: between
looks the runner holds the study's queue open (``store/queue_lease.py``), so an idle worker waits for
the next look's runs instead of exiting, and its start-up (imports, data, compiled kernels) is paid once.

Nothing about the looks is stored besides the runs: a look's decision is a function of its seeds' stored
runs alone, so a relaunch (after Ctrl-C, a kill, a lost host) replays the looks from the store, trains
only what is missing, and resumes the design where it stopped.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from dropout_lab.analysis.plan_verdicts import all_decided, plan_looks, plan_table
from dropout_lab.config.engine import require_one_engine
from dropout_lab.config.study_grid import cell_key
from dropout_lab.config.study_spec import StudySpec
from dropout_lab.runners.launch import RunOptions, StudyWorkers
from dropout_lab.store.backends import open_storage
from dropout_lab.store.queue_lease import QueueLease
from dropout_lab.store.run_tables import INSTRUMENTS, instrument_table, runs_table
from dropout_lab.store.study_setup import CELL_ATTR, open_study, prepare_study, study_cells, total_runs
from dropout_lab.store.trial_records import is_retry_pending

if TYPE_CHECKING:
    from rich.console import Console

#: How a sequential study ended.
DECIDED, MAX_REACHED, INCOMPLETE = "decided", "max reached", "incomplete"


@dataclass
class SequentialOutcome:
    """Where a sequential study stands: ``status`` (decided, max reached, incomplete) at ``n`` seeds."""

    status: str
    n: int
    looks: int
    undecided: list[str]
    counts: dict[str, int]


def missing_runs(study: optuna.Study, cells: list[dict]) -> int:
    """How many of ``cells`` have no finished run in the store (completed, pruned, or failed for good)."""
    trials = study.get_trials(deepcopy=False)
    finished = {cell_key(t.user_attrs.get(CELL_ATTR, t.params)) for t in trials
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                or (t.state == TrialState.FAIL and not is_retry_pending(t, trials))}
    return sum(cell_key(cell) not in finished for cell in cells)


def look_complete(study: optuna.Study, cells: list[dict]) -> bool:
    """Whether every cell of a look has a finished run."""
    return not missing_runs(study, cells)


def run_sequential(spec: StudySpec, spec_path: str, options: RunOptions,
                   console: Console | None = None) -> SequentialOutcome:
    """Run a sequential study look by look (see the module docstring); returns where it stopped."""
    from rich.console import Console

    design, plan = spec.design, spec.plan
    assert design is not None and plan is not None  # the spec check requires a plan with a design
    console = console or Console(stderr=True)
    storage = open_storage(options.storage, options.heartbeat)
    looks = design.looks()
    seed_order = design.seeds(design.max)
    counts: dict[str, int] = {}
    undecided: list[str] = []
    workers: StudyWorkers | None = None
    lease: QueueLease | None = None
    with contextlib.ExitStack() as stack:  # on leaving: close the queue, then let the workers exit
        for index, n in enumerate(looks):
            staged = spec.at_look(n)
            try:
                study = open_study(staged, storage)
                missing = missing_runs(study, study_cells(staged, storage))
            except KeyError:  # not created yet: the first look creates it
                missing = 1
            if missing:
                study = prepare_study(staged, storage)  # queues this look's new seeds
                cells = study_cells(staged, storage)
                if workers is None:
                    require_one_engine(staged, cells, options.population, options.population_precision,
                                       options.overrides)  # all arms on one engine and precision, or refused
                    lease = QueueLease(study)
                    lease.hold()
                    workers = stack.enter_context(StudyWorkers(staged, spec_path, options, console))
                    stack.callback(lease.close)
                else:  # a worker lost since the last look (OOM, SIGKILL) rejoins, as every look's workers once did
                    workers.restart_ended()
                assert lease is not None
                counts = workers.follow(study, total_runs(staged), until=partial(look_complete, study, cells),
                                        tick=lease.renew)
                missing = missing_runs(study, cells)
                if missing:
                    console.print(f"study {spec.name}: look {index + 1} ({n} seeds) is incomplete ({missing} runs "
                                  "missing); relaunch the same command to resume")
                    return SequentialOutcome(INCOMPLETE, n, index + 1, undecided, counts)
            table = plan_table(runs_table(study), {name: instrument_table(study, name) for name in INSTRUMENTS})
            by_look = plan_looks(table, plan, looks[:index + 1], seed_order)
            at_look = by_look[by_look["n"] == n]
            undecided = at_look.loc[~at_look["decided"].astype(bool), "comparison"].tolist()
            decided = len(at_look) - len(undecided)
            if all_decided(by_look, n):
                console.print(f"study {spec.name}: look {index + 1} ({n} seeds): all {decided} comparisons decided; "
                              "stopping")
                return SequentialOutcome(DECIDED, n, index + 1, [], counts)
            more = looks[index + 1] - n if index + 1 < len(looks) else 0
            console.print(f"study {spec.name}: look {index + 1} ({n} seeds): {decided} of {len(at_look)} "
                          f"comparisons decided; undecided: {', '.join(undecided)}"
                          + (f"; adding {more} seeds" if more else f"; max ({design.max} seeds) reached"))
    return SequentialOutcome(MAX_REACHED, looks[-1], len(looks), undecided, counts)
