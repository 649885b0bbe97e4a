"""Every config group composes; bad keys, names and types fail with Hydra's clear messages."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ValidationError

from dropout_lab.config import CONF_DIR

GROUPS = ["data", "model", "noise", "trainer", "logger", "experiment"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_defaults_are_the_chapter_setting(make_cfg) -> None:
    cfg = make_cfg("model=concise", experiment=None)
    assert cfg.model._target_ == "dropout_lab.models.DropoutMLPConcise"
    assert (cfg.model.num_hiddens_1, cfg.model.num_hiddens_2) == (256, 256)
    assert (cfg.model.dropout_1, cfg.model.dropout_2) == (0.5, 0.5)
    assert dict(cfg.optim) == {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant"}
    assert cfg.data.batch_size == 256 and cfg.trainer.max_epochs == 10
    assert cfg.data.val_size == 10_000 and not cfg.data.validate_on_test
    assert not cfg.logger


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(make_cfg, group: str, option: str) -> None:
    if group == "experiment":
        cfg = make_cfg(experiment=option)
    else:
        cfg = make_cfg(f"{group}={option}", experiment=None)
    assert cfg.data.batch_size >= 1
    if group == "model":
        assert cfg.model._target_.endswith({"scratch": "DropoutMLPScratch", "concise": "DropoutMLPConcise",
                                            "noisy": "NoisyMLP"}[option])
    if group == "noise":
        assert cfg.model._target_ == "dropout_lab.models.NoisyMLP" and cfg.model.noise == option
    if group == "logger" and option != "none":
        assert "loggers" in cfg.logger._target_


def test_experiment_overlay_sets_globals(make_cfg) -> None:
    cfg = make_cfg(experiment="book_validation")
    assert cfg.data.validate_on_test is True and cfg.name == "book_validation"


def test_misspelt_key_is_refused(make_cfg) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        make_cfg("model.dropuot_1=0.2")
    assert "dropuot_1" in str(info.value.__cause__ or info.value)


def test_wrong_type_is_refused(make_cfg) -> None:
    with pytest.raises((ConfigCompositionException, ValidationError)) as info:
        make_cfg("trainer.max_epochs=ten")
    assert "max_epochs" in str(info.value.__cause__ or info.value)


def test_unknown_model_lists_choices(make_cfg) -> None:
    with pytest.raises(MissingConfigException) as info:
        make_cfg("model=resnet")
    message = str(info.value)
    assert "resnet" in message and "concise" in message and "scratch" in message


def test_a_checkout_reads_its_top_level_conf_and_studies() -> None:
    """The card's layout: the edited sources are the top-level folders (a wheel carries its own copy)."""
    from dropout_lab.config.paths import STUDIES_DIR

    top = Path(__file__).resolve().parents[1]
    assert Path(CONF_DIR) == top / "conf" and (Path(CONF_DIR) / "train.yaml").is_file()
    assert Path(STUDIES_DIR) == top / "studies" and (Path(STUDIES_DIR) / "demo.yaml").is_file()


def test_instantiable_extends_the_whitelist_without_changing_the_config_hash(make_cfg) -> None:
    from dropout_lab.training.run_record import config_hash

    plain, extended = make_cfg(), make_cfg("instantiable=[mypkg.*]")
    assert plain.instantiable == [] and list(extended.instantiable) == ["mypkg.*"]
    assert config_hash(plain) == config_hash(extended)  # a permission, not what the run computes


def test_a_noise_may_be_a_target_config(make_cfg) -> None:
    cfg = make_cfg("model=noisy", "model.noise={_target_: mypkg.MyNoise, _partial_: true}")
    assert cfg.model.noise._target_ == "mypkg.MyNoise" and cfg.model.noise._partial_ is True
