"""Smoke tests of the ``benchmarks/`` scripts on tiny budgets (no timing asserts)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


@pytest.mark.slow
def test_bench_train_prints_the_variants_and_ratios_and_writes_the_table(data_root: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Hand-written intro\n\nkept as is\n\n"
                      "<!-- bench_train:begin -->\nstale\n<!-- bench_train:end -->\n"
                      "\nhand-written notes after the section\n")
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--epochs", "1", "--repeats", "1", "--train-subset", "2000", "--threads", "1",
         "--workers", "2", "--variants", "abcms", "--data-root", str(data_root), "--readme", str(readme)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for line in ("a: dropout-lab train()", "b: hand-written loop", "c: book: FashionMNIST", "m: a + activation monitor",
                 "s: a with model=scratch"):
        assert line in out
    assert "ratio a/b = " in out and "ratio c/a = " in out and "ratio m/a = " in out and "ratio s/a = " in out
    assert "a and b give the same curves and test accuracy: True" in out
    # 8 steps: the monitor records step 0 (2 layers x 2 stages) and the two probe passes after the epoch.
    assert "m recorded 12 activation rows" in out

    text = readme.read_text()
    assert text.startswith("# Hand-written intro\n\nkept as is\n")
    assert text.rstrip().endswith("hand-written notes after the section")
    assert "stale" not in text and text.count("<!-- bench_train:begin -->") == 1
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip()[:2] for row in table[2:]] == ["a:", "b:", "c:", "m:", "s:"]
    assert "### 1 torch thread" in text
    assert "**a/b = " in text and "**c/a = " in text and "**m/a = " in text and "Load average" in text


SWEEP = BENCH.with_name("bench_sweep.py")
OVERHEAD = BENCH.with_name("bench_overhead.py")


def run_bench(script: Path, marker: str, args: list[str], tmp_path: Path, timeout: int) -> tuple[str, str]:
    """Run a benchmark on a README whose ``marker`` section is stale; return its stdout and the new README."""
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n<!-- {marker}:begin -->\nstale\n<!-- {marker}:end -->\n")
    proc = subprocess.run([sys.executable, str(script), *args, "--readme", str(readme)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = readme.read_text()
    assert text.startswith("intro\n") and "stale" not in text
    return proc.stdout, text


@pytest.mark.slow
def test_bench_sweep_measures_grid_tuning_and_rss_and_writes_its_section(data_root: Path, tmp_path: Path) -> None:
    out, text = run_bench(SWEEP, "bench_sweep", [
        "--grid-epochs", "1", "--grid-seeds", "1", "--tune-trials", "3", "--tune-epochs", "2", "--repeats", "1",
        "--rss-runs", "2", "--train-subset", "1000", "--data-root", str(data_root)], tmp_path, timeout=600)
    assert "grid speedup 2 vs 1 jobs: " in out
    assert "complete 4, pruned 0, failed 0" in out  # every grid run finished, with 1 and with 2 jobs
    assert "tuning: pruning on " in out and "RSS in one process: " in out
    assert "**Speedup of 2 workers over 1: " in text and "**Pruning on / off wall time: " in text
    assert "| run 2 |" in text and "the files were read 1 time(s)" in text  # data read once per process


@pytest.mark.slow
def test_bench_overhead_measures_step_and_monitor_costs_and_writes_its_section(data_root: Path, tmp_path: Path) -> None:
    out, text = run_bench(OVERHEAD, "bench_overhead", [
        "--steps", "64", "--repeats", "1", "--monitor-epochs", "1", "--train-subset", "2000",
        "--data-root", str(data_root)], tmp_path, timeout=300)
    assert "Lightning with batches_per_call=1 " in out and "batches_per_call=16 " in out
    # 8 steps of 256 on 2000 images: step 0 recorded (2 layers x 2 stages) plus the two probe passes.
    assert "monitor: epoch s off " in out and ", 12 rows" in out
    assert "| hand-written |" in text and "`data.batches_per_call=16`" in text and "% per epoch**" in text


@pytest.mark.slow
def test_a_benchmark_without_readme_prints_its_section_and_leaves_the_readme_alone(
        data_root: Path, tmp_path: Path) -> None:
    # A copy of the scripts and README: with the old default (--readme benchmarks/README.md) the copy's
    # README would be rewritten, and the real one is never at risk.
    copy = tmp_path / "benchmarks"
    shutil.copytree(BENCH.parent, copy, ignore=shutil.ignore_patterns("results", "__pycache__"))
    before = {path.relative_to(copy): path.read_bytes() for path in copy.rglob("*") if path.is_file()}
    proc = subprocess.run(
        [sys.executable, str(copy / OVERHEAD.name), "--steps", "64", "--repeats", "1", "--monitor-epochs", "1",
         "--train-subset", "2000", "--data-root", str(data_root)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = {path.relative_to(copy): path.read_bytes() for path in copy.rglob("*")
             if path.is_file() and "__pycache__" not in path.parts}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmarks"]
    out = proc.stdout
    assert "| hand-written |" in out and "`data.batches_per_call=16`" in out  # the section, on stdout
    assert out.strip().splitlines()[-1] == "not written to any README (pass --readme benchmarks/README.md)"
    assert "wrote " not in out


POPULATION = BENCH.with_name("bench_population.py")


@pytest.mark.slow  # over 5 s
def test_bench_population_measures_both_engines_independence_and_tost_and_ends_with_its_line(
        data_root: Path, tmp_path: Path) -> None:
    out, text = run_bench(POPULATION, "bench_population", [
        "--cells", "2", "--seeds", "2", "--epochs", "1", "--train-subset", "1000", "--members", "2",
        "--tost-seeds", "3", "--tost-epochs", "1", "--profile-members", "2", "--data-root", str(data_root)],
        tmp_path, timeout=600)
    assert "per-run: " in out and "fp32: " in out and "bf16: " in out and "runs/h" in out
    assert "independence (fp32, 2 members vs alone, 2 epochs): max abs diff" in out
    assert "TOST scratch bf16: " in out and "TOST concise fp32: " in out
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"population_speedup=\d+\.\d+ independence_max_abs_diff=\S+ tost_p=\S+ "
                        r"bf16_peak_fraction=\d+\.\d+", last), last
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    engines = [row.split("|")[1].strip() for row in rows[2:5]]
    assert engines[0] == "per-run" and "population(K=2, fp32)" in engines[1] and "population(K=2, bf16)" in engines[2]
    assert "**Independence**" in text and "| scratch | population fp32 |" in text
    assert "| concise | population bf16 |" in text
    profile = {row.split("|")[1].strip(): row for row in rows if "ms per step" not in row}
    assert "matmuls (bmm, baddbmm)" in profile and "noise masks (fused counter-based kernel)" in profile
    assert profile["total"].count("100%") == 2  # bf16 and fp32 columns, each group's share of the step
    once = r"\| bf16 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| -?[\d.]+ \| [\d.]+ \|"  # what a worker pays once
    assert re.search(once, text)


DROPCONNECT = BENCH.with_name("bench_dropconnect.py")


@pytest.mark.slow
def test_bench_dropconnect_times_both_techniques_at_every_rate_and_ends_with_its_line(
        data_root: Path, tmp_path: Path) -> None:
    csv = tmp_path / "cost.csv"
    out, text = run_bench(DROPCONNECT, "bench_dropconnect", [
        "--repeats", "2", "--epochs", "1", "--train-subset", "1000", "--rates", "0.2", "0.5", "--population", "2",
        "--data-root", str(data_root), "--csv", str(csv)], tmp_path, timeout=300)
    rows = pd.read_csv(csv)
    timed = rows[~rows["warmup"]]
    cells = timed.groupby(["engine", "noise", "rate"]).size()
    assert set(cells.index) == {(engine, noise, rate) for engine in ("per-run", "population(K=2, bf16)")
                                for noise in ("dropout", "dropconnect") for rate in (0.2, 0.5)}
    assert (cells == 2).all() and (timed[["train_s", "epoch_s"]] > 0).all().all()
    # ABBA: at each rate the two techniques swap places from one repetition to the next.
    runs = rows[rows["epoch"] == 1].sort_values("position")
    order = runs.groupby(["engine", "rate", "rep"])["noise"].agg(tuple).unstack("rep")
    assert (order[0] == order[1].map(lambda techniques: techniques[::-1])).all()
    assert "ratio per-run rate 0.5: dropconnect/dropout training " in out
    assert "| per-run | 0.5 | dropconnect |" in text and "| population(K=2, bf16) | 0.2 | dropout |" in text
    assert "**DropConnect / dropout at rate 0.5, per-run: " in text
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"dropconnect_cost_ratio=\d+\.\d+ ci_low=\S+ ci_high=\S+ p_holm=\S+ rate=0\.5 "
                        r"population_cost_ratio=\d+\.\d+", last), last


STORE = BENCH.with_name("bench_store.py")


@pytest.mark.slow
def test_bench_store_claims_every_queued_run_once_and_ends_with_its_line(tmp_path: Path) -> None:
    out, text = run_bench(STORE, "bench_store", ["--tiny", "--backends", "sqlite"], tmp_path, timeout=120)
    assert "sqlite claim N=1: " in out and "sqlite claim N=2: " in out
    rows = [line for line in text.splitlines() if line.startswith("| sqlite | claim |")]
    assert [row.split("|")[3].strip() for row in rows] == ["1", "2"]
    assert all(row.rstrip(" |").endswith("| 0 | 0") for row in rows)  # lost 0, duplicated 0 in every row
    last = out.strip().splitlines()[-1]
    match = re.fullmatch(r"store_claims_per_s=(\d+\.\d) lost=(\d+) duplicated=(\d+)", last)
    assert match, last
    assert float(match[1]) > 0 and match[2] == "0" and match[3] == "0"


GPU_CHECK = BENCH.with_name("gpu_check.sh")


@pytest.mark.slow  # over 5 s
def test_gpu_check_dry_runs_on_the_cpu_with_exact_member_independence(data_root: Path) -> None:
    """The GPU script's CPU dry run: its table and last line, the mask streams' numbers, a member of 16 exactly the
    run alone, and a population of 1 within float rounding of ``train()`` with the noise off."""
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "DROPOUT_LAB_DATA": str(data_root), "TRAINER": "cpu",
           "SIZES": "1 2", "EPOCHS": "1", "SUBSET": "1000", "EQ_SEEDS": "2", "LIMIT_S": "500"}
    done = subprocess.run(["bash", str(GPU_CHECK)], capture_output=True, text=True, env=env, timeout=560)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| population | 2 | bf16 |" in done.stdout
    last = dict(field.split("=", 1) for field in done.stdout.strip().splitlines()[-1].split())
    assert last["streams_match_cpu"] == "True" and float(last["k_vs_one_max_abs_diff"]) == 0.0, last
    assert float(last["one_vs_train_max_abs_diff"]) <= 1e-4 and float(last["mask_ms_k256"]) > 0, last
