"""Study files: every shipped one loads, composes and runs; field overrides; ex7_tune; tuned_from; grid growth."""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from conftest import CLI
from dropout_lab.analysis.plan_verdicts import plan_looks, plan_table, reference_claims
from dropout_lab.config.compose import compose_train_config
from dropout_lab.config.study_grid import grid_cells, run_overrides
from dropout_lab.config.study_spec import available_studies, load_spec, load_study_ref, split_ref, study_ref
from dropout_lab.errors import StudySpecError
from dropout_lab.reports.analyses.noise_final import technique_labels
from dropout_lab.runners.tuner import study_seed
from dropout_lab.store.backends import open_storage
from dropout_lab.store.run_tables import INSTRUMENTS, runs_table
from dropout_lab.store.study_setup import prepare_study, study_cells, total_runs

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: The ex7 tuning techniques and the upper end of each one's rate search.
EX7_MAX_RATE = {"none": 0.0, "dropout": 0.8, "gaussian": 0.8, "additive_gaussian": 1.0, "uniform": 0.25,
                "gamma": 0.8, "block": 0.8, "dropconnect": 0.8}
EX7_TUNE = [f"ex7_tune technique={t}" for t in EX7_MAX_RATE]
SHIPPED = [ref for name in available_studies() for ref in (EX7_TUNE if name == "ex7_tune" else [name])]


def test_the_shipped_definitions_are_the_expected_ones() -> None:
    assert set(available_studies()) == {"baseline", "baseline_book", "demo", "ex1_rates", "ex2_epochs",
                                        "ex3_variance", "ex4_test_time", "ex5_weight_decay", "ex6_dropconnect",
                                        "ex7_noise", "ex7_tune"}


@pytest.mark.parametrize("ref", SHIPPED)
def test_every_shipped_study_loads_and_its_runs_compose(ref: str) -> None:
    spec = load_study_ref(ref)
    assert spec.question and spec.epochs >= 1 and total_runs(spec) >= 1
    if spec.is_tuning:  # the middle of the search space
        cells = [{k: d.choices[0] if d.type == "categorical" else (d.low + d.high) / 2
                  for k, d in spec.search_space.items()}]
    else:
        cells = grid_cells(spec) or [{"seed": spec.seed_list[0]}]
    for cell in cells:
        cfg = compose_train_config(run_overrides(spec, cell))
        assert cfg.trainer.max_epochs == spec.epochs


@pytest.mark.parametrize(("technique", "high"), EX7_MAX_RATE.items())
def test_ex7_tune_is_one_definition_per_technique(technique: str, high: float) -> None:
    spec = load_spec("ex7_tune", [f"technique={technique}"])
    noise = "dropout" if technique == "none" else technique  # the baseline: dropout at rate 0, the identity
    assert spec.name == f"ex7_tune_{technique}" and spec.overrides == [
        f"noise={noise}", "data.split=per_seed", "optim.schedule=cosine"]
    assert technique in spec.question and spec.is_tuning and spec.n_trials == 40
    assert {k: (d.low, d.high) for k, d in spec.search_space.items()} == \
        {"model.dropout_1": (0.0, high), "model.dropout_2": (0.0, high), "optim.lr": (0.02, 0.5)}
    # real tuning: TPE leaves its random start-up within a third of the budget; pruning after a warm-up
    assert spec.sampler["n_startup_trials"] <= spec.n_trials / 3 and spec.pruner["n_warmup_steps"] >= 1
    # robust tuning: three tuning seeds averaged per trial, on the plan's primary metric's validation counterpart
    assert spec.seeds == [700, 701, 702] and spec.plan is not None and spec.objective == "best_val_acc"
    assert load_spec("ex7_noise").seed_list[0] > max(spec.seeds)  # final seeds tuning never saw
    assert load_spec("ex7_tune", [f"params.technique={technique}"]) == spec


def test_ex7_tuning_studies_draw_different_candidates() -> None:
    seeds = {study_seed(load_spec("ex7_tune", [f"technique={t}"])) for t in EX7_MAX_RATE}
    assert len(seeds) == len(EX7_MAX_RATE)


def test_ex7_noise_is_tuned_from_every_ex7_tune_technique() -> None:
    spec = load_spec("ex7_noise")
    assert spec.tuned_from == EX7_TUNE
    assert sorted(load_study_ref(ref).name for ref in spec.tuned_from) == sorted(f"ex7_tune_{t}" for t in EX7_MAX_RATE)


REPORTS = Path(__file__).resolve().parent.parent / "reports"
#: Studies that answer a question with an analysis plan: every grid study and the study of tuned winners.
PLANNED = [name for name in available_studies() if name != "ex7_tune"]
#: The exercise studies (and the baseline): sequential seeds, and each seed draws its own validation split.
SEQUENTIAL = [name for name in PLANNED if name not in ("demo", "baseline_book")]


def _selects(selection: dict, cells: list[dict]) -> bool:
    """True if some cell has every value of ``selection``."""
    return any(all(cell.get(key) == value for key, value in selection.items()) for cell in cells)


@pytest.mark.parametrize("name", PLANNED)
def test_every_plan_selects_existing_cells_and_justifies_its_margins(name: str) -> None:
    spec = load_spec(name)
    assert spec.plan is not None and spec.plan.comparisons, f"{name}: no declared comparisons"
    if spec.tuned_from:  # the cells are the tuning studies' winners, one per technique
        cells = [{"technique": load_study_ref(ref).params["technique"]} for ref in spec.tuned_from]
    else:
        cells = grid_cells(spec)
    for row in [*spec.plan.comparisons, *spec.plan.references]:
        sides = {"cell": row.cell} if hasattr(row, "cell") else {"treatment": row.treatment, "control": row.control}
        for side, selection in sides.items():
            # an instrument's metric also selects its own rows (layer, mode, T); the rest must name a cell
            cell_part = {k: v for k, v in selection.items() if k in cells[0]}
            assert cell_part or getattr(row, "metric", None), f"{name}: {row.name}: {side} names no cell"
            assert _selects(cell_part, cells), f"{name}: {row.name}: {side} {selection} selects no cell"
        assert row.why.strip(), f"{name}: {row.name}: the margin has no why"


@pytest.mark.parametrize("name", [n for n in PLANNED if (REPORTS / n / "runs.csv").is_file()])
def test_every_plan_reads_the_shipped_runs_of_its_study(name: str) -> None:
    """Each declared comparison and reference selects runs (and instrument rows) of the study's shipped tables."""
    spec = load_spec(name)
    runs = pd.read_csv(REPORTS / name / "runs.csv")
    instruments = {i: pd.read_csv(REPORTS / name / f"{i}.csv") for i in INSTRUMENTS
                   if (REPORTS / name / f"{i}.csv").is_file()}
    table = plan_table(runs, instruments)
    seeds = sorted(runs["seed"].unique().tolist())
    looks = plan_looks(table, spec.plan, [len(seeds)], seeds)
    assert looks["n_pairs"].tolist() == [len(seeds)] * len(spec.plan.comparisons), looks[["comparison", "n_pairs"]]
    assert looks["sd"].gt(0).all()  # real differences, not a row compared with itself
    claims = reference_claims(table, spec.plan)
    assert claims["n"].tolist() == [len(seeds)] * len(spec.plan.references)


def test_exercise_studies_add_seeds_in_batches_on_their_own_seeds_and_splits() -> None:
    for name in SEQUENTIAL:
        spec = load_spec(name)
        assert spec.design is not None and spec.design.min == 10 and spec.design.batch == 10, name
        assert "data.split=per_seed" in spec.overrides, name
    designs = {name: load_spec(name).design for name in [*SEQUENTIAL, "baseline_book"]}
    ranges = {name: set(design.seeds(design.max)) for name, design in designs.items() if design is not None}
    tuning = set(load_spec("ex7_tune", ["technique=dropout"]).seed_list)
    for name, seeds in ranges.items():  # no seed, up to max, is shared with another study or with ex7's tuning
        others = set().union(tuning, *(s for other, s in ranges.items() if other != name))
        assert not seeds & others, f"{name} shares seeds {sorted(seeds & others)[:5]}"
    assert load_spec("demo").design is None and len(load_spec("demo").seed_list) <= 3  # `make demo` stays fast


def test_ex7_tune_needs_a_known_technique() -> None:
    with pytest.raises(StudySpecError, match=r"missing parameter\(s\) params.technique: set technique=VALUE"):
        load_spec("ex7_tune")
    with pytest.raises(StudySpecError, match=r"params.(noises|max_rates).resnet"):
        load_spec("ex7_tune", ["technique=resnet"])


def test_fields_are_overridden_with_typed_values() -> None:
    spec = load_spec("ex1_rates", ["seeds=[0,1]", "epochs=2", "grid.model.dropout_1=[0.3]", "+grid.optim.lr=[0.05]",
                                   "question='a question with spaces'"])
    assert spec.seeds == [0, 1] and spec.epochs == 2 and spec.question == "a question with spaces"
    assert spec.grid == {"model.dropout_1": [0.3], "model.dropout_2": [0.1, 0.3, 0.5, 0.7], "optim.lr": [0.05]}
    # a plan naming a removed grid key is refused, naming it; without the plan (and so with a fixed list of
    # seeds: a sequential design stops on the plan) the smaller grid loads
    with pytest.raises(StudySpecError, match=r"treatment=\['model.dropout_2'\] is invalid"):
        load_spec("ex1_rates", ["~grid.model.dropout_2"])
    # a grid narrowed on the command line keeps the comparisons whose cells remain and lists the others
    narrowed = load_spec("ex1_rates", ["grid.model.dropout_1=[0.3,0.5]", "seeds=[0,1]"]).plan
    assert narrowed is not None
    assert [c.name for c in narrowed.comparisons] == ["swap 0.3/0.5", "first rate 0.3 instead of 0.5"]
    assert "swap 0.1/0.3" in narrowed.dropped and len(narrowed.dropped) == 6
    # ... but a sequential design needs one left
    with pytest.raises(StudySpecError, match=r"left out: swap 0.1/0.3, .*first rate 0.1 instead of 0.5\)"):
        load_spec("ex1_rates", ["grid.model.dropout_1=[0.7]"])
    assert load_spec("ex1_rates", ["~grid.model.dropout_2", "plan=null", "seeds=[0]"]).grid == \
        {"model.dropout_1": [0.1, 0.3, 0.5, 0.7]}
    tuned = load_spec("ex7_tune", ["technique=gamma", "search_space.model.dropout_1.high=0.3", "n_trials=2"])
    assert tuned.search_space["model.dropout_1"].high == 0.3 and tuned.search_space["model.dropout_2"].high == 0.8
    assert tuned.n_trials == 2


@pytest.mark.parametrize(("override", "message"), [
    ("seedz=1", "seedz=1 is invalid: unknown field 'seedz'; allowed one of name, question"),
    ("epochs=many", "epochs=many is invalid: Value 'many'"),
    ("epochs=0", "epochs=0 is invalid: allowed an integer >= 1"),
    ("seeds=0,1", "seeds=0,1 is invalid: allowed a single value per field (write a list as seeds=[a,b])"),
    ("grid.model.dropuot_1=[0.3]",
     "unknown field 'grid.model.dropuot_1'; allowed one of model.dropout_1, model.dropout_2"),
    ("+grid.model.dropout_1=[0.3]", "grid.model.dropout_1 is already set; use grid.model.dropout_1=VALUE"),
    ("epochs.max=3", "unknown field 'epochs.max'; allowed no sub-keys"),
    ("sampler=annealing", "sampler="),
])
def test_bad_field_overrides_name_the_field(override: str, message: str) -> None:
    with pytest.raises(StudySpecError) as info:
        load_spec("ex1_rates", [override])
    assert message in str(info.value) and "ex1_rates.yaml (with " in str(info.value)


@pytest.mark.parametrize("name", ["../../escaped", "..", "a/b", "/tmp/x", ".hidden", "a..b", "-x", "", "a b"])
def test_a_study_name_must_be_a_safe_folder_name(name: str) -> None:
    with pytest.raises(StudySpecError) as info:
        load_spec("ex1_rates", [f"name='{name}'"])
    assert f"name={name!r} is invalid: allowed letters, digits, '_', '.' and '-'" in str(info.value)
    assert load_spec("ex1_rates", ["name=ex1_rates.v2-b"]).name == "ex1_rates.v2-b"


def test_a_study_file_named_to_escape_the_results_folder_is_refused_before_writing(run_cli, tmp_path: Path) -> None:
    study = tmp_path / "escape.yaml"
    study.write_text("name: ../../escaped\nquestion: q\nepochs: 1\ngrid: {model: [scratch]}\n")
    out = run_cli("study", "run", str(study), "--results-dir", str(tmp_path / "a" / "b" / "results"))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert f"{study}: name='../../escaped' is invalid: allowed letters" in out.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["escape.yaml"]  # no results folder, nothing above it


def test_study_references_round_trip_through_shell_quoting(tmp_path: Path) -> None:
    ref = study_ref(str(tmp_path / "my study.yaml"), ["question=a b", "seeds=[0,1]"])
    assert split_ref(ref) == (str(tmp_path / "my study.yaml"), ["question=a b", "seeds=[0,1]"])
    with pytest.raises(StudySpecError, match="study reference '' is invalid"):
        split_ref("")


def test_cli_overrides_define_the_study_for_show_and_status(run_cli) -> None:
    show = run_cli("study", "show", "ex1_rates", "seeds=[0,1]", "grid.model.dropout_1=[0.5]")
    assert show.returncode == 0, show.stderr
    assert "total runs: 8" in show.stdout
    assert "model.dropout_1=0.5 model.dropout_2=0.1,0.3,0.5,0.7 seed=0,1" in show.stdout
    tuned = run_cli("study", "show", "ex7_tune", "technique=uniform")
    assert tuned.returncode == 0 and tuned.stdout.startswith("ex7_tune_uniform:")
    bad = run_cli("study", "status", "ex1_rates", "--storage", "sqlite:///x.db", "seedz=1")
    assert bad.returncode == 2 and "unknown field 'seedz'" in bad.stderr and "Traceback" not in bad.stderr


def _add_tuning_trials(storage, name: str, rates: list[float], values: list[float]) -> None:
    """Complete trials of tuning study ``name`` (created if needed): both rates ``rates[i]``, value ``values[i]``."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    dists = {"model.dropout_1": FloatDistribution(0.0, 1.0), "model.dropout_2": FloatDistribution(0.0, 1.0)}
    for rate, value in zip(rates, values, strict=True):
        study.add_trial(create_trial(params={"model.dropout_1": rate, "model.dropout_2": rate / 2},
                                     distributions=dists, value=value))


def test_tuned_from_reruns_each_tuning_studys_best_with_every_seed(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}", heartbeat_interval=None)
    refs = ["ex7_tune technique=gamma n_trials=2", "ex7_tune technique=uniform n_trials=2"]
    spec = load_spec("ex7_noise", [f"tuned_from=[{','.join(repr(r) for r in refs)}]", "seeds=[3,4]"])
    assert spec.tuned_from == refs and total_runs(spec) == 4
    with pytest.raises(StudySpecError, match=r"tuned_from study 'ex7_tune_gamma' is not finished \(0/2 trials\)"):
        study_cells(spec, storage)
    _add_tuning_trials(storage, "ex7_tune_gamma", rates=[0.2, 0.4], values=[0.8, 0.85])
    _add_tuning_trials(storage, "ex7_tune_uniform", rates=[0.1], values=[0.7])
    with pytest.raises(StudySpecError, match=r"'ex7_tune_uniform' is not finished \(1/2 trials\)"):
        study_cells(spec, storage)
    _add_tuning_trials(storage, "ex7_tune_uniform", rates=[0.2], values=[0.6])
    fixed = {"data.split": "per_seed", "optim.schedule": "cosine"}
    assert study_cells(spec, storage) == [
        {"noise": "gamma", **fixed, "model.dropout_1": 0.4, "model.dropout_2": 0.2, "seed": 3},
        {"noise": "gamma", **fixed, "model.dropout_1": 0.4, "model.dropout_2": 0.2, "seed": 4},
        {"noise": "uniform", **fixed, "model.dropout_1": 0.1, "model.dropout_2": 0.05, "seed": 3},
        {"noise": "uniform", **fixed, "model.dropout_1": 0.1, "model.dropout_2": 0.05, "seed": 4}]


def test_a_grown_grid_enqueues_only_its_new_cells(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}", heartbeat_interval=None)
    small = load_spec("demo", ["seeds=[0]"])
    study = prepare_study(small, storage)
    assert sorted(t.user_attrs["cell"]["model"] for t in study.trials) == ["concise", "scratch"]
    for _ in range(2):  # finish both runs, as a worker would
        trial = study.ask()
        study.tell(trial, 0.5)
    prepare_study(small, storage)  # unchanged grid: nothing new
    assert len(study.get_trials(deepcopy=False)) == 2

    grown = load_spec("demo", ["seeds=[0,1]", "grid.model=[scratch,concise,noisy]"])
    study = prepare_study(grown, storage)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    new_cells = sorted((t.user_attrs["cell"]["model"], t.user_attrs["cell"]["seed"]) for t in waiting)
    assert new_cells == [("concise", 1), ("noisy", 0), ("noisy", 1), ("scratch", 1)]
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2 and study.user_attrs["total_runs"] == 6


# -- every shipped study through `study run`, at a 1-epoch subset budget, on one store ---------------------------

#: Extra field overrides per study that shrink its grid (every study also gets epochs=1 seeds=[0]).
SHRINK = {
    "ex1_rates": ["grid.model.dropout_1=[0.5]", "grid.model.dropout_2=[0.1,0.5]"],
    "ex6_dropconnect": ["grid.model.dropout_1=[0.5]"],
    "ex7_noise": ["tuned_from=[" + ",".join(f"'{ref} n_trials=2'" for ref in EX7_TUNE) + "]"],
    **{ref: ["n_trials=2"] for ref in EX7_TUNE},
}


def _tiny(ref: str, seeds: str = "[0]") -> tuple[str, list[str]]:
    """A study's name and the field overrides that run it at a 1-epoch budget with ``seeds``."""
    name, own = split_ref(ref)
    return name, [*own, "epochs=1", f"seeds={seeds}", *SHRINK.get(ref, [])]


def _study_run(name: str, fields: list[str], env: dict, cwd: Path, results: Path) -> subprocess.CompletedProcess:
    cmd = [*CLI, "study", "run", name, *fields, "--results-dir", str(results),
           "--override", "data=subset", "--override", "threads=1"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=240)


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


@pytest.mark.slow
def test_every_shipped_study_runs_at_a_tiny_budget(data_root: Path, tmp_path: Path) -> None:
    """Each shipped study (each ex7 technique) through ``study run``; ex7_noise after its tuning studies.

    Also: a grid grown by a seed runs only its new cells (``demo``), and ``tuned_from`` reruns each
    tuning study's best parameters.
    """
    env = {**os.environ, "DROPOUT_LAB_DATA": str(data_root)}
    results = tmp_path / "results"
    storage = f"sqlite:///{results / 'studies.db'}"

    def run_lane(refs: list[str]) -> list[str]:
        failures = []
        for ref in refs:
            name, fields = _tiny(ref)
            out = _study_run(name, fields, env, tmp_path, results)
            if out.returncode != 0 or "remaining=0" not in out.stdout:
                failures.append(f"{ref}: rc={out.returncode}\n{out.stdout}\n{out.stderr[-2000:]}")
                continue
            spec = load_spec(name, fields)
            study = optuna.load_study(study_name=spec.name, storage=storage)
            if len(_complete(study)) != total_runs(spec):
                failures.append(f"{ref}: {len(_complete(study))} finished runs, expected {total_runs(spec)}")
        return failures

    # Two lanes on the two cores, one store: the grid studies, and the tuning studies then ex7_noise.
    lanes = [[r for r in SHIPPED if r not in EX7_TUNE and r != "ex7_noise"], [*EX7_TUNE, "ex7_noise"]]
    with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
        failures = [f for lane in pool.map(run_lane, lanes) for f in lane]
    assert not failures, "\n\n".join(failures)

    noise = optuna.load_study(study_name="ex7_noise", storage=storage)
    final = runs_table(_complete(noise))
    final = final.assign(technique=technique_labels(final))  # the baseline trains noise=dropout at rates 0
    for _, run in final.iterrows():
        best = optuna.load_study(study_name=f"ex7_tune_{run['technique']}", storage=storage).best_trial
        assert {k: run[k] for k in ("model.dropout_1", "model.dropout_2", "optim.lr")} == \
            {k: best.params[k] for k in ("model.dropout_1", "model.dropout_2", "optim.lr")}
    assert Counter(final["technique"]) == Counter(list(EX7_MAX_RATE))

    demo = optuna.load_study(study_name="demo", storage=storage)
    before = {t.number: t.datetime_complete for t in demo.trials}
    out = _study_run(*_tiny("demo", seeds="[0,1]"), env, tmp_path, results)
    assert out.returncode == 0 and "done=4" in out.stdout, out.stderr
    demo = optuna.load_study(study_name="demo", storage=storage)
    assert {t.number: t.datetime_complete for t in demo.trials if t.number in before} == before  # not rerun
    assert sorted((t.params["model"], t.params["seed"]) for t in demo.trials if t.number not in before) == \
        [("concise", 1), ("scratch", 1)]
