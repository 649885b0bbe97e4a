"""Noise techniques: unbiased, variance as documented, train-only; DropConnect; NoisyMLP; errors; config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.errors import MissingConfigException
from torch import nn

from dropout_lab.config import CONF_DIR
from dropout_lab.errors import InvalidValueError
from dropout_lab.models import (
    NOISE_TECHNIQUES,
    DropConnectLinear,
    DropoutMLPConcise,
    DropoutMLPScratch,
    NoisyMLP,
    make_noise,
)
from dropout_lab.training.fit import train

SAMPLES = 20_000
#: 16 unit values, negative and positive (noise must be unbiased for any h, not only ReLU outputs).
H = torch.cat([torch.linspace(-2.0, -0.5, 4), torch.linspace(0.25, 3.0, 12)])


def _multiplicative(p: float) -> float:
    return p / (1 - p)


#: name -> (rate, kwargs, per-element variance of h' given h and the rate)
ACTIVATION_CASES = {
    "dropout": (0.5, {}, lambda h, p: _multiplicative(p) * h**2),
    "dropout_concise": (0.3, {}, lambda h, p: _multiplicative(p) * h**2),
    "gaussian": (0.5, {}, lambda h, p: _multiplicative(p) * h**2),
    "additive_gaussian": (0.5, {}, lambda h, p: torch.full_like(h, p**2)),
    "uniform": (0.2, {}, lambda h, p: _multiplicative(p) * h**2),
    "gamma": (0.7, {}, lambda h, p: _multiplicative(p) * h**2),
    "block": (0.5, {"group_size": 4}, lambda h, p: _multiplicative(p) * h**2),
}


def test_every_activation_technique_is_tested() -> None:
    assert set(ACTIVATION_CASES) | {"dropconnect"} == set(NOISE_TECHNIQUES)


@pytest.mark.parametrize("name", sorted(ACTIVATION_CASES))
def test_unbiased_per_unit_with_the_documented_variance(name: str) -> None:
    rate, kwargs, variance = ACTIVATION_CASES[name]
    torch.manual_seed(0)
    noise = make_noise(name, rate, **kwargs).train()
    out = noise(H.expand(SAMPLES, -1).clone())
    var = variance(H, rate)
    se = (var / SAMPLES).sqrt()
    assert ((out.mean(0) - H).abs() <= 5 * se).all(), (out.mean(0) - H) / se
    # Pooled over all elements, the squared deviation matches the documented variance within 5%.
    ratio = ((out - H) ** 2 / var).mean().item()
    assert abs(ratio - 1) < 0.05


@pytest.mark.parametrize("name", sorted(ACTIVATION_CASES))
def test_identity_in_eval_and_at_rate_zero_noise_in_training(name: str) -> None:
    rate, kwargs, _ = ACTIVATION_CASES[name]
    torch.manual_seed(0)
    X = torch.rand(32, 16) + 0.1
    noise = make_noise(name, rate, **kwargs)
    assert not torch.equal(noise.train()(X), X)
    assert torch.equal(noise.eval()(X), X)
    assert torch.equal(make_noise(name, 0.0, **kwargs).train()(X), X)


def test_block_dropout_drops_whole_groups_and_handles_a_short_last_group() -> None:
    torch.manual_seed(0)
    out = make_noise("block", 0.5, group_size=4).train()(torch.ones(1000, 10))
    assert set(out.unique().tolist()) == {0.0, 2.0}
    for group in (out[:, 0:4], out[:, 4:8], out[:, 8:10]):
        assert (group == group[:, :1]).all()
    kept = (out[:, ::4] != 0).float().mean().item()
    assert abs(kept - 0.5) < 5 * math.sqrt(0.25 / out[:, ::4].numel())


def test_uniform_and_gamma_multipliers_stay_non_negative() -> None:
    torch.manual_seed(0)
    X = torch.ones(SAMPLES)
    uniform = make_noise("uniform", 0.25).train()(X)
    assert uniform.min() >= 0 and uniform.max() <= 2 and uniform.min() < 0.05
    assert make_noise("gamma", 0.9).train()(X).min() >= 0
    assert make_noise("gaussian", 0.5).train()(X).min() < 0  # the contrast: Gaussian flips signs


# DropConnect


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropconnect_mask_rate_and_scaling(p: float) -> None:
    torch.manual_seed(0)
    layer = DropConnectLinear(200, 100, p=p)
    weight = layer.masked_weight()
    kept = weight != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / weight.numel())
    torch.testing.assert_close(weight[kept], layer.weight[kept] / (1 - p))


def test_dropconnect_output_is_unbiased_and_eval_uses_full_weights() -> None:
    torch.manual_seed(0)
    p, draws = 0.5, 4000
    layer = DropConnectLinear(32, 8, p=p)
    x = torch.randn(1, 32)
    with torch.no_grad():
        expected = F.linear(x, layer.weight, layer.bias)[0]
        outs = torch.stack([layer.train()(x)[0] for _ in range(draws)])
        se = (p / (1 - p) * (layer.weight**2 * x**2).sum(1) / draws).sqrt()
        assert ((outs.mean(0) - expected).abs() <= 5 * se).all()
        assert outs.std(0).min() > 0
        assert torch.equal(layer.eval()(x)[0], expected)


def test_dropconnect_shares_one_mask_per_batch() -> None:
    torch.manual_seed(0)
    layer = DropConnectLinear(64, 16, p=0.5).train()
    x = torch.randn(1, 64).expand(8, -1)
    with torch.no_grad():
        out = layer(x)
        assert (out == out[:1]).all()  # the same weights for every example of the batch
        assert not torch.equal(layer(x), out)  # a new mask on the next forward pass


# NoisyMLP


@pytest.mark.parametrize("name", sorted(NOISE_TECHNIQUES))
def test_noisy_mlp_trains_and_exposes_its_layers(name: str) -> None:
    torch.manual_seed(0)
    net = NoisyMLP(32, 16, 0.2, 0.2, noise=name)
    assert all(type(getattr(net, f"lin{k}")) in (nn.Linear, DropConnectLinear) for k in (1, 2))
    assert type(net.lin3) is nn.Linear
    if name == "dropconnect":
        assert isinstance(net.lin1, DropConnectLinear) and isinstance(net.lin2, DropConnectLinear)
        assert isinstance(net.noise1, nn.Identity) and isinstance(net.noise2, nn.Identity)
        assert (net.lin1.p, net.lin2.p) == (0.2, 0.2)
    else:
        assert type(net.noise1) is NOISE_TECHNIQUES[name].cls and net.noise2.rate == 0.2
    X, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    loss = F.cross_entropy(net.train()(X), y)
    loss.backward()
    for param in net.parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all()
    assert net.lin1.weight.grad.abs().sum() > 0
    assert not torch.equal(net(X), net(X))
    net.eval()
    assert torch.equal(net(X), net(X))


def test_noisy_mlp_hook_points_see_activations_before_and_after_noise() -> None:
    torch.manual_seed(0)
    net = NoisyMLP(64, 32, 0.5, 0.5, noise="dropout")
    seen = {}
    net.lin1.register_forward_hook(lambda m, i, o: seen.__setitem__("before", torch.relu(o)))
    net.lin2.register_forward_hook(lambda m, i, o: seen.__setitem__("after", i[0]))
    X = torch.rand(16, 1, 28, 28)
    net.train()(X)
    before, after = seen["before"], seen["after"]
    assert ((after == 0) | torch.isclose(after, 2 * before)).all()
    assert ((after == 0) & (before > 0)).any()
    net.eval()(X)
    assert torch.equal(seen["after"], seen["before"])


# Errors


def test_unknown_technique_lists_the_valid_names() -> None:
    with pytest.raises(InvalidValueError, match="noise='foo'") as info:
        make_noise("foo", 0.5)
    assert all(name in str(info.value) for name in NOISE_TECHNIQUES)
    with pytest.raises(InvalidValueError, match="model.noise='foo'.*gaussian"):
        NoisyMLP(noise="foo")


@pytest.mark.parametrize("kwargs,message", [
    ({"noise": "gaussian", "dropout_1": 1.0}, r"model.dropout_1=1.0 .*\[0, 1\)"),
    ({"noise": "gamma", "dropout_2": 1.0}, r"model.dropout_2=1.0 .*\[0, 1\)"),
    ({"noise": "dropout", "dropout_1": 1.2}, r"model.dropout_1=1.2 .*\[0, 1\]"),
    ({"noise": "dropconnect", "dropout_2": -0.1}, r"model.dropout_2=-0.1 .*\[0, 1\]"),
    ({"noise": "uniform", "dropout_1": 0.25, "dropout_2": 0.5}, r"model.dropout_2=0.5 .*\[0, 0.25\]"),
    ({"noise": "additive_gaussian", "dropout_1": -1.0}, r"model.dropout_1=-1.0 .*>= 0"),
    ({"noise": "block", "noise_kwargs": {"group_size": 0}}, r"model.noise_kwargs.group_size=0 .*positive integer"),
    ({"noise": "gaussian", "noise_kwargs": {"group_size": 4}}, r"model.noise_kwargs.group_size=4 .*no parameters"),
    ({"noise": "block", "noise_kwargs": {"size": 4}}, r"model.noise_kwargs.size=4 .*\['group_size'\]"),
    ({"noise": "dropconnect", "noise_kwargs": {"group_size": 4}}, r"model.noise_kwargs.group_size=4"),
])
def test_bad_rates_and_parameters_name_the_field_and_the_allowed_values(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidValueError, match=message):
        NoisyMLP(**kwargs)


def test_direct_construction_checks_too() -> None:
    with pytest.raises(InvalidValueError, match=r"rate=1.0 .*\[0, 1\)"):
        NOISE_TECHNIQUES["gaussian"].cls(1.0)
    with pytest.raises(InvalidValueError, match=r"p=2.0 .*\[0, 1\]"):
        DropConnectLinear(4, 4, p=2.0)
    with pytest.raises(InvalidValueError, match="dropconnect.*DropConnectLinear"):
        make_noise("dropconnect", 0.5)


@pytest.mark.parametrize("cls", [DropoutMLPScratch, DropoutMLPConcise])
def test_chapter_nets_refuse_a_noise(cls: type) -> None:
    with pytest.raises(InvalidValueError, match="model.noise='gaussian'.*model=noisy or noise=NAME"):
        cls(noise="gaussian")
    with pytest.raises(InvalidValueError, match="model.noise_kwargs="):
        cls(noise_kwargs={"group_size": 4})
    assert isinstance(cls(noise=None, noise_kwargs={}), nn.Module)


# Config and training


def test_noise_group_has_one_option_per_technique() -> None:
    assert {p.stem for p in (Path(CONF_DIR) / "noise").glob("*.yaml")} == set(NOISE_TECHNIQUES)


def test_user_guide_table_lists_every_technique_with_its_rationale() -> None:
    guide = (Path(__file__).resolve().parents[1] / "docs" / "user-guide.md").read_text()
    section = guide.split("\n## Noise techniques", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(" `"): line.rsplit("|", 2)[1].strip()
            for line in section.splitlines() if line.startswith("| `") and "rationale |" not in line}
    assert rows == {name: entry.rationale for name, entry in NOISE_TECHNIQUES.items()}


def test_scratch_model_with_a_noise_is_refused(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(InvalidValueError, match="model.noise='gaussian'"):
        train(make_cfg("model=scratch", "model.noise=gaussian"), tmp_path)
    assert not (tmp_path / "run.json").exists()


def test_unknown_noise_option_lists_the_options(make_cfg) -> None:
    with pytest.raises(MissingConfigException) as info:
        make_cfg("noise=foo")
    assert "noise/foo" in str(info.value) and "gaussian" in str(info.value) and "dropconnect" in str(info.value)


def test_noise_overlay_keeps_command_line_rates(make_cfg) -> None:
    cfg = make_cfg("noise=block", "model.dropout_1=0.2", "model.noise_kwargs.group_size=16")
    assert cfg.model._target_ == "dropout_lab.models.NoisyMLP" and cfg.model.noise == "block"
    assert cfg.model.dropout_1 == 0.2 and cfg.model.noise_kwargs.group_size == 16


@pytest.mark.parametrize("noise", ["gaussian", "dropconnect"])
def test_short_training_with_a_noise_beats_chance(make_cfg, tmp_path: Path, noise: str) -> None:
    record = train(make_cfg(f"noise={noise}"), tmp_path)
    assert record.status == "completed" and record.config["model"]["noise"] == noise
    assert record.final["test_acc"] > 0.3  # chance is 0.1
