"""Instruments: activation statistics during training (exercise 3) and test-time evaluation (exercise 4)."""

import json
import math
import re
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from dropout_lab.cli.evaluate import evaluate_main
from dropout_lab.errors import InvalidValueError
from dropout_lab.evaluation import (
    evaluate_test_time,
    expected_calibration_error,
    mc_evaluate,
    mean_entropy,
    negative_log_likelihood,
)
from dropout_lab.evaluation.checkpoint import split_tensors
from dropout_lab.training.activation_monitor import ROW_KEYS
from dropout_lab.training.fit import train
from dropout_lab.training.saved_run import load_run

# The smoke subset: 2000 training images in batches of 256 -> 8 optimizer steps per epoch.
STEPS_PER_EPOCH = 8
METRICS = ["accuracy", "nll", "ece", "entropy"]


class KeepModule(L.Callback):
    """Keeps the trained LightningModule so a test can inspect its network."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.module = pl_module


# batches_per_call 16: the epoch's 8 steps arrive as one group; 1: Lightning sees each step's batch.
@pytest.mark.parametrize("model,per_call", [("scratch", 16), ("concise", 16), ("concise", 1)])
def test_monitor_records_layers_stages_sources_and_steps(make_cfg, tmp_path: Path, model: str, per_call: int) -> None:
    keep = KeepModule()
    train(make_cfg(f"model={model}", "monitor.enabled=true", "monitor.every_n_steps=2",
                   f"data.batches_per_call={per_call}"), tmp_path, callbacks=[keep])
    rows = pd.DataFrame(json.loads((tmp_path / "run.json").read_text())["activations"])
    assert list(rows.columns) == list(ROW_KEYS)
    # Train rows at steps 0, 2, 4, 6; probe rows once, after the epoch's 8 steps: 4 rows per pass, no more
    # (hooks left on during validation or test would add rows).
    assert sorted(rows[rows.source == "train"].step.unique()) == [0, 2, 4, 6]
    for source in ("probe_train", "probe_eval"):
        assert rows[rows.source == source].step.tolist() == [STEPS_PER_EPOCH] * 4
    assert len(rows) == (4 + 2) * 4
    for _, group in rows.groupby(["source", "step"]):
        assert sorted(zip(group.layer, group.stage)) == [(k, s) for k in (1, 2) for s in ("after", "before")]
    assert (rows.epoch == 1).all() and (rows["var"] > 0).all()

    wide = rows.pivot_table(index=["source", "step", "layer"], columns="stage", values=["zero_frac", "mean", "var"])
    noisy = wide.loc[["train", "probe_train"]]
    # p = 0.5 zeroes about half of the units ReLU left alive: after ~ before + 0.5 * (1 - before).
    expected_after = noisy["zero_frac", "before"] + 0.5 * (1 - noisy["zero_frac", "before"])
    assert (noisy["zero_frac", "after"] > noisy["zero_frac", "before"] + 0.15).all()
    assert ((noisy["zero_frac", "after"] - expected_after).abs() < 0.02).all()
    clean = wide.loc["probe_eval"]
    for stat in ("zero_frac", "mean", "var"):
        assert (clean[stat, "after"] == clean[stat, "before"]).all()
    # The hooks are gone once training ends.
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in keep.module.modules())


def test_monitor_leaves_training_unchanged(make_cfg, tmp_path: Path) -> None:
    plain = train(make_cfg("seed=5"), tmp_path / "plain")
    monitored = train(make_cfg("seed=5", "monitor.enabled=true", "monitor.every_n_steps=1"), tmp_path / "monitored")
    assert plain.activations == [] and len(monitored.activations) == (STEPS_PER_EPOCH + 2) * 4
    assert [r["train_loss"] for r in monitored.curves] == [r["train_loss"] for r in plain.curves]
    assert monitored.final == plain.final and monitored.config_hash == plain.config_hash


@pytest.mark.slow
def test_test_time_evaluation_and_checkpoint(make_cfg, tmp_path: Path) -> None:
    # 5 epochs with momentum: a model far enough from uniform predictions (test acc ~0.65) that
    # MC dropout and the weight-scaling rule should agree; still ~2 s on one core.
    cfg = make_cfg("trainer.max_epochs=5", "optim.lr=0.05", "optim.momentum=0.9", "test_time.enabled=true",
                   "test_time.T=[1,10,100]", "test_time.checkpoint=true")
    record = train(cfg, tmp_path)
    rows = {(r["mode"], r["T"]): r for r in record.test_time}
    assert list(rows) == [("deterministic", 1), ("single", 100), ("mc", 1), ("mc", 10), ("mc", 100)]
    det, single = rows["deterministic", 1], rows["single", 100]
    # The deterministic pass is the Lightning test pass (one batch of 2000 images).
    assert det["accuracy"] == pytest.approx(record.final["test_acc"], abs=1e-6)
    assert det["nll"] == pytest.approx(record.final["test_loss"], rel=1e-5)
    assert single["accuracy_std"] > 0 and single["accuracy"] < det["accuracy"]
    assert rows["mc", 100]["accuracy"] > single["accuracy"] + 3 * single["accuracy_std"]
    assert all(r["seconds"] > 0 and 0 <= r["ece"] <= 1 for r in record.test_time)
    # The run's wall time includes its instrument: the epochs, the test pass and the 100 noisy passes.
    epochs = sum(row["seconds"] for row in record.curves)
    assert record.wall_time_s > epochs + rows["mc", 100]["seconds"]
    # MC seconds are cumulative: mc(T) times the first T of the max(T) noisy passes whose mean is single's seconds.
    mc_seconds = [rows["mc", T]["seconds"] for T in (1, 10, 100)]
    assert mc_seconds[0] < mc_seconds[1] < mc_seconds[2]
    assert mc_seconds[2] == pytest.approx(100 * single["seconds"], rel=1e-9)
    # Noise on, a single pass is more uncertain than noise off: predictive entropy rises.
    assert single["entropy"] > det["entropy"]

    # The checkpoint reproduces the in-training evaluation exactly (same weights, same seeded passes).
    saved, net, datamodule = load_run(tmp_path)
    X, y = split_tensors(datamodule.test_dataloader())
    again = evaluate_test_time(net, X, y, T=[1, 10, 100], seed=cfg.seed)
    assert [{m: r[m] for m in METRICS} for r in again] == [{m: r[m] for m in METRICS} for r in record.test_time]
    assert saved.final == record.final

    # Averaging T=1 pass with the noise off is the deterministic evaluation, bit for bit.
    (mc_clean,) = mc_evaluate(net, X, y, T=[1], noise=False)
    assert {m: mc_clean[m] for m in METRICS} == {m: det[m] for m in METRICS}
    # MC averaging over many passes approaches the weight-scaling rule. Both accuracies are measured
    # on the same 2000 test images; the binomial standard error of one accuracy near 0.65 is
    # sqrt(0.65 * 0.35 / 2000) ~ 0.011, and the two rules differ by a small systematic amount for
    # ReLU nets (|diff| <= 0.017 over 10 seeds in our runs), so 0.03 is ~2.7 SE and not flaky.
    assert abs(rows["mc", 100]["accuracy"] - det["accuracy"]) <= 0.03


def test_metrics_on_a_hand_made_example() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    y = torch.tensor([0, 1, 1, 0])  # the 0.8 prediction is wrong, the others right
    # 15 bins: each confidence (0.9, 0.8, 0.7, 0.6) in its own bin, |acc - conf| = 0.1, 0.8, 0.3, 0.4.
    assert expected_calibration_error(probs, y) == pytest.approx((0.1 + 0.8 + 0.3 + 0.4) / 4)
    # 2 bins: all four in [0.5, 1]: accuracy 3/4 equals mean confidence 0.75, so no gap.
    assert expected_calibration_error(probs, y, n_bins=2) == pytest.approx(0.0, abs=1e-7)
    assert expected_calibration_error(torch.tensor([[1.0, 0.0]]), torch.tensor([1])) == pytest.approx(1.0)
    assert negative_log_likelihood(probs, y) == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.7)
                                                                + math.log(0.6)) / 4, rel=1e-6)
    assert math.isfinite(negative_log_likelihood(torch.tensor([[1.0, 0.0]]), torch.tensor([1])))
    h = [-(p * math.log(p) + (1 - p) * math.log(1 - p)) for p in (0.9, 0.8, 0.7, 0.6)]
    assert mean_entropy(probs) == pytest.approx(sum(h) / 4, rel=1e-6)
    assert mean_entropy(torch.tensor([[1.0, 0.0]])) == 0.0


def test_ece_agrees_with_torchmetrics() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(5000, 10, generator=gen), dim=1)
    y = torch.randint(0, 10, (5000,), generator=gen)
    reference = MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")(probs, y).item()
    assert reference > 0.1
    assert expected_calibration_error(probs, y) == pytest.approx(reference, abs=1e-5)


@pytest.mark.parametrize("override,message", [("test_time.T=[0]", "test_time.T=[0]"),
                                              ("test_time.T=[]", "test_time.T=[]"),
                                              ("monitor.every_n_steps=0", "monitor.every_n_steps=0"),
                                              ("monitor.probe_size=0", "monitor.probe_size=0")])
def test_bad_instrument_values_fail_before_training(make_cfg, tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(InvalidValueError, match=re.escape(message)):
        train(make_cfg(override), tmp_path)
    assert not (tmp_path / "run.json").exists()


def test_bad_T_in_direct_calls() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2))
    X, y = torch.zeros(3, 4), torch.zeros(3, dtype=torch.long)
    with pytest.raises(InvalidValueError, match=re.escape("test_time.T=[1, 0]")):
        evaluate_test_time(net, X, y, T=[1, 0])
    with pytest.raises(InvalidValueError, match=re.escape("test_time.T=[2.5]")):
        mc_evaluate(net, X, y, T=[2.5])


@pytest.mark.slow
def test_evaluate_command_on_a_saved_run(make_cfg, run_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    record = train(make_cfg("test_time.checkpoint=true"), run_dir)
    assert record.test_time == [] and (run_dir / "model.pt").is_file()
    out = run_cli("evaluate", str(run_dir), "--T", "1", "5")
    assert out.returncode == 0, out.stderr
    assert "deterministic" in out.stdout and "mc" in out.stdout
    table = pd.read_csv(run_dir / "test_time.csv")
    assert list(zip(table["mode"], table["T"])) == [("deterministic", 1), ("single", 5), ("mc", 1), ("mc", 5)]
    det = table[table["mode"] == "deterministic"].iloc[0]
    assert det["accuracy"] == pytest.approx(record.final["test_acc"], abs=1e-6)


def test_evaluate_command_without_checkpoint_says_how_to_get_one(make_cfg, tmp_path: Path, capsys) -> None:
    train(make_cfg(), tmp_path)
    assert evaluate_main([str(tmp_path)]) == 1
    assert "test_time.checkpoint=true" in capsys.readouterr().err
    assert not (tmp_path / "test_time.csv").exists()
