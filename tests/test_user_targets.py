"""A user's own noise technique and network, chosen by ``_target_`` from ``tests/user_plugins``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dropout_lab.config.targets import INSTANTIABLE_TARGETS, run_whitelist
from dropout_lab.errors import InvalidValueError
from dropout_lab.training.fit import train
from user_plugins.my_noise import LaplaceNoise, TinyNet

LAPLACE = "{_target_: user_plugins.my_noise.LaplaceNoise, _partial_: true}"


def test_a_users_noise_technique_trains(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("instantiable=[user_plugins.*]", "model=noisy", f"model.noise={LAPLACE}",
                   "+model.noise_kwargs.scale=2.0", "model.dropout_1=0.2", "model.dropout_2=0.4")
    record = train(cfg, tmp_path / "run")
    assert record.status == "completed" and record.final["test_acc"] > 0.3  # chance is 0.1
    assert record.config["model"]["noise"]["_target_"] == "user_plugins.my_noise.LaplaceNoise"


def test_a_users_noise_technique_is_built_per_layer_with_its_rate(make_cfg) -> None:
    from hydra.utils import execution_whitelist, instantiate

    cfg = make_cfg("instantiable=[user_plugins.my_noise.LaplaceNoise]", "noise=gamma", f"model.noise={LAPLACE}",
                   "+model.noise_kwargs.scale=2.0", "model.dropout_1=0.2", "model.dropout_2=0.5")
    with execution_whitelist(run_whitelist(cfg)):
        net = instantiate(cfg.model)
    assert isinstance(net.noise1, LaplaceNoise) and isinstance(net.noise2, LaplaceNoise)
    assert (net.dropout_1, net.dropout_2) == (0.2, 0.5) and net.noise2.b == pytest.approx(2.0 * 0.5 ** 0.5)
    assert net.noise == "user_plugins.my_noise.LaplaceNoise"


def test_a_users_network_trains(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("instantiable=[user_plugins.*]", "model._target_=user_plugins.my_noise.TinyNet",
                   "model.num_hiddens_1=32")
    record = train(cfg, tmp_path / "run")
    assert record.status == "completed" and record.final["test_acc"] > 0.3
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["model"]["_target_"].endswith("TinyNet")
    assert TinyNet(num_hiddens_1=32).layers[1].out_features == 32


@pytest.mark.parametrize(("overrides", "key"), [
    (["model=noisy", f"model.noise={LAPLACE}"], "model.noise._target_"),
    (["model._target_=user_plugins.my_noise.TinyNet"], "model._target_"),
    (["instantiable=[user_plugins.my_noise.TinyNet]", "model=noisy", f"model.noise={LAPLACE}"], "model.noise._target_"),
])
def test_a_target_outside_the_whitelist_is_refused_before_training(make_cfg, tmp_path: Path, overrides: list[str],
                                                                    key: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        train(make_cfg(*overrides), tmp_path / "run")
    assert info.value.field == key and "allow yours with instantiable=[user_plugins.my_noise.*]" in str(info.value)
    assert not (tmp_path / "run" / "run.json").exists()


def test_malformed_instantiable_patterns_are_refused() -> None:
    for bad in (["*"], ["os.system('x')"], [""]):
        with pytest.raises(InvalidValueError, match=r"instantiable=.* is invalid: allowed a list of dotted names"):
            run_whitelist({"instantiable": bad})
    assert run_whitelist({"instantiable": ["mypkg.*"]}) == (*INSTANTIABLE_TARGETS, "mypkg.*")


@pytest.mark.slow
def test_a_users_targets_from_the_command_line(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = (str(Path(__file__).parent), os.environ.get("PYTHONPATH", ""))  # where user_plugins lives
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    out = run_cli("train", "experiment=smoke", "instantiable=[user_plugins.*]", "model=noisy",
                  f"model.noise={LAPLACE}", "hydra.run.dir=run")
    assert out.returncode == 0, out.stderr
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "completed" and record["config"]["model"]["noise"]["_partial_"] is True
    refused = run_cli("train", "experiment=smoke", "model._target_=user_plugins.my_noise.TinyNet")
    assert refused.returncode != 0
    assert "error: model._target_='user_plugins.my_noise.TinyNet' is invalid" in refused.stderr


def test_an_interpolated_target_is_checked_as_it_resolves(make_cfg) -> None:
    with pytest.raises(InvalidValueError) as info:
        run_whitelist(make_cfg("+evil=builtins.print", "model._target_=${evil}"))
    assert info.value.field == "model._target_" and info.value.value == "builtins.print"
    created = {"model": {"_target_": "dropout_lab.models.NoisyMLP", "noise": "${oc.create:'{_target_: os.system}'}"}}
    with pytest.raises(InvalidValueError, match=r"^model\.noise\._target_='os\.system' is invalid"):
        run_whitelist(created)  # a target built by a resolver
    allowed = make_cfg("+mine=dropout_lab.models.DropoutMLP", "model._target_=${mine}")
    assert run_whitelist(allowed) == INSTANTIABLE_TARGETS


def test_a_target_whose_interpolation_does_not_resolve_is_refused(make_cfg) -> None:
    with pytest.raises(InvalidValueError) as info:
        run_whitelist(make_cfg("model._target_=${nope}"))
    assert info.value.field == "model._target_" and info.value.value == "${nope}"
    assert "Interpolation key 'nope' not found" in str(info.value) and "\n" not in str(info.value)


def test_check_complete_names_where_a_chain_breaks_and_missing_values() -> None:
    from omegaconf import OmegaConf

    from dropout_lab.config.targets import check_complete

    chain = OmegaConf.create({"data": {"shuffle_seed": "${seed}"}, "seed": "${oc.env:DROPOUT_LAB_NO_SUCH_VAR}"})
    with pytest.raises(InvalidValueError, match=r"^seed='\$\{oc\.env:DROPOUT_LAB_NO_SUCH_VAR\}' is invalid"):
        check_complete(chain)
    with pytest.raises(InvalidValueError, match=r"^model\.dropout_1='\?\?\?' is invalid: allowed a value"):
        check_complete(OmegaConf.create({"model": {"dropout_1": "???"}}))
    check_complete(OmegaConf.create({"a": 1, "b": "${a}", "c": ["${b}"]}))


def test_an_interpolated_target_from_the_command_line_is_one_clear_line(run_cli, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # Hydra's own tracebacks stay hidden
    out = run_cli("train", "data=subset", "trainer.max_epochs=1", "+evil=builtins.print", "model._target_=${evil}")
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: model._target_='builtins.print' is invalid: allowed ")
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.rglob("run.json"))
