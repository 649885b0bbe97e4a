"""The cluster recipe of docs/clusters.md on a real SLURM: ``dropout-lab worker --multirun`` through
``hydra/launcher=submitit_slurm`` finishes a population study in PostgreSQL, each run once."""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from conftest import CLI, wait_for
from dropout_lab.config.study_spec import load_study_ref
from dropout_lab.store.backends import open_storage
from dropout_lab.store.study_setup import prepare_study
from slurm_cluster import PACKAGES, SlurmCluster, missing_requirement, processes_of, throwaway_slurm

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.slurm]


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    """A throw-away single-node SLURM cluster (``slurm_cluster.py``), stopped after the module."""
    reason = missing_requirement()
    if reason:
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail(f"{reason}; `make test` installs them as root (Debian packages {PACKAGES})")
        pytest.skip(reason)
    with throwaway_slurm() as cluster:
        yield cluster
    assert not processes_of(cluster.conf), "a daemon, slurmstepd or job of the throw-away cluster outlived it"


def test_submitit_slurm_workers_finish_a_population_study_each_run_once(
        slurm: SlurmCluster, postgres_url: str, data_root: Path, tmp_path: Path) -> None:
    spec_file = tmp_path / "on_slurm.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "on_slurm", "question": "q", "experiment": "smoke", "epochs": 2,
        "grid": {"model.dropout_1": [0.2, 0.5]}, "seeds": [0, 1, 2]}))
    prepare_study(load_study_ref(str(spec_file)), open_storage(postgres_url))  # what `study run` does first

    env = {**slurm.env, "DROPOUT_LAB_DATA": str(data_root), "DROPOUT_LAB_RESULTS": str(tmp_path / "results")}
    out = subprocess.run(
        [*CLI, "worker", "--multirun", f"study={spec_file}", f"storage={postgres_url}", "worker=range(2)",
         "population=4", "threads=1", "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={slurm.partition}",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10",
         f"hydra.launcher.submitit_folder={tmp_path / 'submitit'}/%j"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "sacct" not in out.stdout + out.stderr  # submitit read every job state from accounting

    trials = optuna.load_study(study_name="on_slurm", storage=postgres_url).get_trials()
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    cells = Counter(tuple(sorted(t.params.items())) for t in trials)
    assert len(cells) == 6 and set(cells.values()) == {1}
    # population=4: the first claim takes 4 of the 6 cells, the next the other 2 (whichever job makes it)
    engines = Counter(t.user_attrs["engine"] for t in trials)
    assert engines == {"population(K=4, fp32)": 4, "population(K=2, fp32)": 2}, engines

    # Both array tasks ran as SLURM jobs on the node, completed in accounting; the runs are theirs alone.
    logs = "\n".join(p.read_text() for p in (tmp_path / "submitit").rglob("*_log.*"))
    finished = {int(pid): int(n) for pid, n in re.findall(r"worker \d \(pid (\d+)\) finished (\d+) run", logs)}
    assert len(finished) == 2 and sum(finished.values()) == 6, finished
    assert {t.user_attrs["worker"]["pid"] for t in trials} <= set(finished)

    def jobs_ended() -> list[str]:  # a job's result file comes before its end in accounting
        jobs = slurm.run("sacct", "-X", "-n", "-P", "-S", "now-1days", "-o", "JobID,State,NodeList").split()
        return [] if any(j.split("|")[1] in ("PENDING", "RUNNING", "COMPLETING") for j in jobs) else jobs

    jobs = wait_for(jobs_ended, "both array tasks ended in accounting", timeout=60)
    assert len(jobs) == 2 and all(re.fullmatch(rf"\d+_[01]\|COMPLETED\|{slurm.node}", j) for j in jobs), jobs
