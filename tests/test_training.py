"""A run's configuration and folder are checked before training; seeds set init, masks and data order.

The behaviours of a training run (records, determinism, divergence, selection, pruning, interrupts) are
tested for both engines in ``test_engines.py``."""

from pathlib import Path

import pytest

from dropout_lab.errors import InvalidValueError
from dropout_lab.training.fit import train


def test_config_hash_ignores_seed_but_not_rates(make_cfg, tmp_path: Path) -> None:
    from dropout_lab.training.run_record import config_hash

    assert config_hash(make_cfg("seed=1")) == config_hash(make_cfg("seed=2"))
    assert config_hash(make_cfg("model.dropout_1=0.2")) != config_hash(make_cfg())


@pytest.mark.parametrize("override,field", [("optim.lr=-1", "optim.lr=-1.0"),
                                            ("trainer.max_epochs=0", "trainer.max_epochs=0"),
                                            ("model.dropout_1=1.5", "model.dropout_1=1.5"),
                                            ("model.num_hiddens_2=0", "model.num_hiddens_2=0"),
                                            ("optim.schedule=linear", "optim.schedule='linear'.*constant, cosine")])
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

    monkeypatch.setattr(sys.modules["dropout_lab.training.fit"], "MIN_FREE_BYTES",
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
