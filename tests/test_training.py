"""Real short trainings on a 2k-image subset: learning, records, determinism and failures."""

import json
import math
from pathlib import Path

import pytest

from dropout_lab.errors import InvalidValueError, RunDivergedError
from dropout_lab.training.run_record import RunRecord
from dropout_lab.training.train import train


@pytest.mark.parametrize("model", ["scratch", "concise"])
def test_short_training_clearly_beats_chance(make_cfg, tmp_path: Path, model: str) -> None:
    record = train(make_cfg(f"model={model}", "trainer.max_epochs=2"), tmp_path / model)
    assert record.status == "completed"
    assert record.final["test_acc"] > 0.5  # chance is 0.1
    assert record.curves[-1]["train_loss"] < record.curves[0]["train_loss"]


def test_run_record_holds_what_a_study_needs(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("seed=7"), tmp_path)
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["status"] == "completed" and saved["seed"] == 7
    assert saved["config"]["model"]["dropout_1"] == 0.5
    assert set(saved["curves"][0]) >= {"epoch", "train_loss", "val_loss", "val_acc"}
    assert set(saved["final"]) == {"val_loss", "val_acc", "test_loss", "test_acc"}
    assert saved["wall_time_s"] > 0 and saved["versions"]["torch"].startswith("2.14")
    assert len(saved["config_hash"]) == 16
    assert RunRecord.read(tmp_path).final == saved["final"]


def test_config_hash_ignores_seed_but_not_rates(make_cfg, tmp_path: Path) -> None:
    from dropout_lab.training.run_record import config_hash

    assert config_hash(make_cfg("seed=1")) == config_hash(make_cfg("seed=2"))
    assert config_hash(make_cfg("model.dropout_1=0.2")) != config_hash(make_cfg())


def test_same_seed_same_metrics_different_seed_different(make_cfg, tmp_path: Path) -> None:
    a = train(make_cfg("seed=3"), tmp_path / "a")
    b = train(make_cfg("seed=3"), tmp_path / "b")
    c = train(make_cfg("seed=4"), tmp_path / "c")
    assert a.curves[-1]["train_loss"] == b.curves[-1]["train_loss"]
    assert a.final == b.final
    assert a.curves[-1]["train_loss"] != c.curves[-1]["train_loss"]


@pytest.mark.parametrize("model", ["scratch", "concise"])
def test_grouping_batches_per_call_changes_nothing_but_speed(make_cfg, tmp_path: Path, model: str) -> None:
    import lightning as L

    class CountSteps(L.Callback):
        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.steps, self.batches = trainer.global_step, trainer.num_training_batches

    # The smoke subset has 8 batches per epoch: groups of 3, 3 and 2 with batches_per_call=3.
    runs, counts = {}, {}
    for per_call in (1, 3):
        counts[per_call] = CountSteps()
        runs[per_call] = train(make_cfg(f"model={model}", "seed=11", "trainer.max_epochs=2",
                                        f"data.batches_per_call={per_call}"),
                               tmp_path / str(per_call), callbacks=[counts[per_call]])
    one, grouped = runs[1], runs[3]
    assert [(counts[k].steps, counts[k].batches) for k in (1, 3)] == [(16, 8), (16, 3)]
    for key in ("train_loss", "val_loss", "val_acc"):
        assert [r[key] for r in one.curves] == [r[key] for r in grouped.curves]
    assert one.final == grouped.final and one.config_hash == grouped.config_hash


def test_diverging_run_is_recorded_as_failed(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(RunDivergedError, match="train_loss=nan"):
        train(make_cfg("optim.lr=50", "model.dropout_1=0", "model.dropout_2=0"), tmp_path)
    saved = RunRecord.read(tmp_path)
    assert saved.status == "failed" and "diverged" in saved.reason
    assert math.isnan(saved.curves[0]["train_loss"])


@pytest.mark.parametrize("override,field", [("optim.lr=-1", "optim.lr=-1.0"),
                                            ("trainer.max_epochs=0", "trainer.max_epochs=0"),
                                            ("model.dropout_1=1.5", "model.dropout_1=1.5"),
                                            ("model.num_hiddens_2=0", "model.num_hiddens_2=0")])
def test_bad_values_fail_before_training(make_cfg, tmp_path: Path, override: str, field: str) -> None:
    with pytest.raises(InvalidValueError, match=field):
        train(make_cfg(override), tmp_path)
    assert not (tmp_path / "run.json").exists()


def test_unwritable_results_folder_fails_before_training(make_cfg, tmp_path: Path) -> None:
    from dropout_lab.errors import DropoutLabError

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(DropoutLabError, match=f"results folder {blocker}/run cannot be written"):
        train(make_cfg(), blocker / "run")


def test_nearly_full_disk_is_refused_before_training(make_cfg, tmp_path: Path, monkeypatch) -> None:
    import sys

    from dropout_lab.errors import DropoutLabError

    monkeypatch.setattr(sys.modules["dropout_lab.training.train"], "MIN_FREE_BYTES",
                        2**62)  # more than any disk has free
    with pytest.raises(DropoutLabError, match="MiB free; at least"):
        train(make_cfg(), tmp_path / "run")
    assert not (tmp_path / "run" / "run.json").exists()


def test_negative_weight_decay_is_refused(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(InvalidValueError, match=r"optim.weight_decay=-0.1 is invalid: allowed a number >= 0"):
        train(make_cfg("optim.weight_decay=-0.1"), tmp_path)


def test_seeds_change_init_masks_and_data_order(make_cfg) -> None:
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from dropout_lab.config.targets import INSTANTIABLE_TARGETS

    def draw(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = make_cfg(f"seed={seed}")
        L.seed_everything(seed, verbose=False)
        from hydra.utils import execution_whitelist

        with execution_whitelist(INSTANTIABLE_TARGETS):
            net = instantiate(cfg.model).train()
            dm = instantiate(cfg.data)
        dm.setup("fit")
        first_group = next(iter(dm.train_dataloader()))  # data.batches_per_call > 1: groups of batches
        X, y = next(iter(first_group))
        mask = net.net[3](torch.ones(1000)) != 0  # the first nn.Dropout
        return net.net[1].weight.detach().clone(), mask, y

    a, b, c = draw(1), draw(1), draw(2)
    for same, other in zip(a, b):
        assert torch.equal(same, other)
    for first, second in zip(a, c):
        assert not torch.equal(first, second)


def test_classifier_attribute_shortcut_keeps_module_semantics() -> None:
    import torch
    from torch import nn

    from dropout_lab.training.classifier import Classifier

    module = Classifier(nn.Linear(3, 2))
    module.extra = nn.Linear(2, 2)  # a submodule is registered
    module.scale = nn.Parameter(torch.ones(1))  # a parameter is registered
    module.label = "x"  # a plain value is a plain attribute
    module.automatic_optimization = True  # property setters still run
    assert "extra" in module._modules and "scale" in module._parameters and "label" not in module._modules
    assert module.label == "x" and module.automatic_optimization is True
    assert len(list(module.parameters())) == 2 + 2 + 1
    module.scale = None  # None for a parameter's name goes through nn.Module: the entry stays, set to None
    assert "scale" in module._parameters and module._parameters["scale"] is None
    with pytest.raises(TypeError):
        module.extra = 3  # nn.Module refuses a non-module for a submodule's name
