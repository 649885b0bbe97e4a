"""Fused populations: stacked layers, per-member noise and batches, independence, failures, pruning, configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from dropout_lab.config.compose import compose_train_config
from dropout_lab.data.batches import TensorBatches
from dropout_lab.data.population_batches import PopulationBatches
from dropout_lab.errors import InvalidValueError
from dropout_lab.models import NOISE_TECHNIQUES, NoisyMLP
from dropout_lab.models.population_mlp import StackedMLP
from dropout_lab.models.population_noise import POPULATION_NOISE, StackedDropConnectLinear, make_population_noise
from dropout_lab.models.stacked import StackedLinear
from dropout_lab.training.population import PruneMembers, build_population, fit_population, train_population
from dropout_lab.training.run_record import RunRecord
from dropout_lab.training.train import train
from test_noise import ACTIVATION_CASES, SAMPLES, H  # the single-run cases: one source for the variances

#: Members differ in everything a member may differ in; the third diverges at once.
MEMBERS = {
    "a": ["seed=0", "model.dropout_1=0.5", "optim.lr=0.1", "optim.momentum=0.9"],
    "b": ["seed=1", "model.dropout_1=0.2", "model.dropout_2=0.3", "optim.lr=0.05", "optim.weight_decay=0.001"],
    "nan": ["seed=2", "optim.lr=1e6"],
    "d": ["seed=3", "model.dropout_1=0.0", "model.dropout_2=0.0", "optim.lr=0.2", "optim.momentum=0.5"],
}
TOLERANCE = 1e-4
CURVE_KEYS = ("train_loss", "val_loss", "val_acc")


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def max_curve_difference(first: dict, second: dict) -> float:
    assert [row["epoch"] for row in first["curves"]] == [row["epoch"] for row in second["curves"]]
    diffs = [abs(a[k] - b[k]) for a, b in zip(first["curves"], second["curves"], strict=True) for k in CURVE_KEYS]
    diffs += [abs(first["final"][k] - second["final"][k]) for k in first["final"]]
    return max(diffs)


@pytest.fixture(scope="module")
def compose(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Compose a 2-epoch ``model=scratch`` run on the smoke subset (2k training images)."""
    results = tmp_path_factory.mktemp("results")

    def _compose(*overrides: str) -> DictConfig:
        return compose_train_config([f"data.root={data_root}", f"results_dir={results}", "experiment=smoke",
                                     "model=scratch", "trainer.max_epochs=2", "optuna.record=false", *overrides])

    return _compose


@pytest.fixture(scope="module")
def four(compose) -> list[dict]:
    """The population of the four ``MEMBERS``, trained together."""
    return train_population([compose(*overrides) for overrides in MEMBERS.values()])


# Independence


@pytest.mark.parametrize("name", ["a", "b", "d"])
def test_a_member_in_a_population_of_four_equals_the_member_alone(compose, four: list[dict], name: str) -> None:
    alone = train_population([compose(*MEMBERS[name])])[0]
    together = four[list(MEMBERS).index(name)]
    assert together["status"] == alone["status"] == "completed"
    assert len(together["curves"]) == 2
    assert max_curve_difference(together, alone) <= TOLERANCE


def test_a_diverging_member_fails_with_its_reason_and_the_others_go_on(four: list[dict]) -> None:
    failed = four[list(MEMBERS).index("nan")]
    assert failed["status"] == "failed"
    assert failed["reason"].startswith("RunDivergedError: diverged: train_loss=") and "at epoch 1" in failed["reason"]
    assert failed["final"] == {} and len(failed["curves"]) == 1
    assert not math.isfinite(failed["curves"][0]["train_loss"])
    others = [r for r in four if r is not failed]
    assert all(r["status"] == "completed" and math.isfinite(r["final"]["test_loss"]) for r in others)


def test_members_differ_from_each_other(four: list[dict]) -> None:
    finals = {r["final"]["val_loss"] for r in four if r["status"] == "completed"}
    assert len(finals) == 3


@pytest.mark.parametrize("overrides", [
    ["optim.momentum=0.9", "optim.weight_decay=0.001"],
    ["model=noisy", "noise=dropconnect", "model.dropout_1=0.3"],
])
def test_a_population_of_one_reproduces_the_single_run(compose, tmp_path: Path, overrides: list[str]) -> None:
    """Same init, batch order and masks as ``train()``: the same curves up to matmul rounding."""
    cfg = compose("seed=1", *overrides)
    single = train(cfg, tmp_path)
    (member,) = train_population([cfg])
    assert max_curve_difference(member, {"curves": single.curves, "final": single.final}) <= TOLERANCE
    assert member["config_hash"] == single.config_hash and member["config"] == single.config


def test_results_are_run_record_contents(four: list[dict]) -> None:
    for result in four:
        record = RunRecord(**result)
        assert record.seed == result["config"]["seed"]
        for row in record.curves:
            assert set(row) <= {"epoch", "train_loss", "val_loss", "val_acc", "seconds"} and row["seconds"] > 0
        assert record.wall_time_s >= sum(row["seconds"] for row in record.curves)
    assert set(four[0]["final"]) == {"val_loss", "val_acc", "test_loss", "test_acc"}


def test_a_pruned_member_leaves_and_its_mates_are_unchanged(compose, four: list[dict]) -> None:
    cfgs = [compose(*MEMBERS["a"]), compose("seed=7")]
    datamodule, module = build_population(cfgs)
    prune = PruneMembers(lambda number, member: number == 1 and member.curves[-1]["epoch"] == 1)
    kept, pruned = fit_population(cfgs[0], datamodule, module, [prune])
    assert pruned["status"] == "pruned" and "epoch 1" in pruned["reason"] and len(pruned["curves"]) == 1
    assert module.active == [0] and module.net.lin1.weight.shape[0] == 1
    assert max_curve_difference(kept, four[0]) <= TOLERANCE


# Configs


@pytest.mark.parametrize("override,field", [
    ("trainer.max_epochs=3", "trainer.max_epochs"),
    ("data.batch_size=128", "data.batch_size"),
    ("model.num_hiddens_1=128", "model.num_hiddens_1"),
    ("model=concise", "model._target_"),
])
def test_incompatible_configs_are_refused_naming_the_field(compose, override: str, field: str) -> None:
    with pytest.raises(InvalidValueError, match=rf"^{field}=.*as in the population's first config \(run 1"):
        build_population([compose("seed=0"), compose("seed=1", override)])


def test_noise_techniques_must_match_and_bad_values_are_named(compose) -> None:
    with pytest.raises(InvalidValueError, match="^model.noise='gaussian'"):
        build_population([compose("model=noisy", "noise=dropout"), compose("model=noisy", "noise=gaussian")])
    with pytest.raises(InvalidValueError, match=r"model.dropout_2=1.5 .*\[0, 1\]"):
        build_population([compose("seed=0"), compose("seed=1", "model.dropout_2=1.5")])
    with pytest.raises(InvalidValueError, match="monitor.enabled"):
        build_population([compose("monitor.enabled=true")])
    with pytest.raises(InvalidValueError, match="population"):
        build_population([])


# Stacked layers and batches


def test_stacked_linear_is_k_independent_linears() -> None:
    layer = StackedLinear(6, 4, generators(3, 5))
    torch.manual_seed(5)
    reference = torch.nn.Linear(6, 4)  # nn.Linear after manual_seed(5): member 1's init
    torch.testing.assert_close(layer.weight[1], reference.weight.t(), rtol=0, atol=0)
    torch.testing.assert_close(layer.bias[1, 0], reference.bias, rtol=0, atol=0)
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(layer(x)[1], reference(x[1]))
    torch.testing.assert_close(layer(x[0])[1], reference(x[0]))  # one batch for every member
    layer.keep(torch.tensor([1]))
    torch.testing.assert_close(layer(x[1:])[0], reference(x[1]))


def test_stacked_mlp_matches_noisy_mlp_and_keeps_members_in_place() -> None:
    net = StackedMLP(generators(0, 1, 2), [0.5, 0.2, 0.0], [0.5, 0.1, 0.0], 32, 16, noise="gaussian").eval()
    torch.manual_seed(1)
    single = NoisyMLP(32, 16, 0.2, 0.1, noise="gaussian").eval()
    X = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(net(X)[1], single(X))
    net.keep(torch.tensor([2, 1]))
    assert net.noise1.rates == [0.0, 0.2] and len(net.generators) == 2
    torch.testing.assert_close(net(X)[1], single(X))


def test_each_member_shuffles_with_its_own_seed_whatever_its_mates() -> None:
    X, y = torch.arange(20.0).view(20, 1), torch.arange(20)
    pair = PopulationBatches(X, y, 8, [5, 7], steps_per_call=2)
    alone = PopulationBatches(X, y, 8, [7], steps_per_call=2)
    single = TensorBatches(X, y, 8, shuffle=True, seed=7)
    for _ in range(2):  # two passes: a new permutation each
        batches_pair = [b for group in pair for b in group]
        batches_alone = [b for group in alone for b in group]
        for (Xp, yp), (Xa, ya), (Xs, ys) in zip(batches_pair, batches_alone, single, strict=True):
            assert Xp.shape == (2, len(ys), 1)
            assert torch.equal(yp[1], ya[0]) and torch.equal(ya[0], ys) and torch.equal(Xp[1, :, 0], Xs[:, 0])
            assert torch.equal(Xa[0], Xp[1])
    assert len(pair) == 2 and pair.steps == 3


# Noise in population mode


def test_every_technique_has_a_population_version() -> None:
    assert set(POPULATION_NOISE) | {"dropconnect"} == set(NOISE_TECHNIQUES)


@pytest.mark.parametrize("name", sorted(ACTIVATION_CASES))
def test_population_noise_is_unbiased_per_member_with_the_documented_variance(name: str) -> None:
    rate, kwargs, variance = ACTIVATION_CASES[name]
    rates = [rate, rate / 2, 0.0]
    noise = make_population_noise(name, rates, **kwargs).train()
    out = noise(H.expand(len(rates), SAMPLES, -1).clone(), generators(0, 1, 2))
    for k, p in enumerate(rates[:2]):
        var = variance(H, p)
        se = (var / SAMPLES).sqrt()
        assert ((out[k].mean(0) - H).abs() <= 5 * se).all(), (k, (out[k].mean(0) - H) / se)
        assert abs(((out[k] - H) ** 2 / var).mean().item() - 1) < 0.05
    assert torch.equal(out[2], H.expand(SAMPLES, -1))  # rate 0: unchanged
    assert torch.equal(noise.eval()(out, generators(0, 1, 2)), out)


@pytest.mark.parametrize("name", sorted(set(ACTIVATION_CASES) - {"dropout_concise"}))
def test_population_noise_draws_what_the_single_technique_draws(name: str) -> None:
    """Member k's noise is the single-run technique's under the same generator state (``dropout_concise``
    draws ``u > p`` masks, not ``nn.Dropout``'s Bernoulli sampler)."""
    from dropout_lab.models import make_noise

    rate, kwargs, _ = ACTIVATION_CASES[name]
    h = torch.rand(2, 64, 16) + 0.1
    out = make_population_noise(name, [rate, rate], **kwargs).train()(h, generators(4, 9))
    torch.manual_seed(9)
    torch.testing.assert_close(out[1], make_noise(name, rate, **kwargs).train()(h[1]))


def test_population_dropconnect_is_unbiased_per_member_and_shares_a_mask_per_batch() -> None:
    draws, rates = 3000, [0.5, 0.2, 0.0]
    layer = StackedDropConnectLinear(32, 8, generators(0, 1, 2), rates).train()
    x = torch.randn(1, 32)
    gens = generators(10, 11, 12)
    with torch.no_grad():
        expected = layer.eval()(x)[:, 0]
        outs = torch.stack([layer.train()(x, gens)[:, 0] for _ in range(draws)])  # [draws, K, 8]
        for k, p in enumerate(rates[:2]):
            se = (p / (1 - p) * (layer.weight[k].t() ** 2 * x**2).sum(1) / draws).sqrt()
            assert ((outs[:, k].mean(0) - expected[k]).abs() <= 5 * se).all()
        assert torch.equal(outs[:, 2], expected[2].expand(draws, -1))
        out = layer(x.expand(4, -1), gens)
        assert (out == out[:, :1]).all()


def test_population_training_step_keeps_gradients_per_member() -> None:
    net = StackedMLP(generators(0, 1), [0.5, 0.5], [0.5, 0.5], 16, 8).train()
    net.generators = generators(0, 1)
    X, y = torch.rand(2, 4, 784), torch.randint(0, 10, (2, 4))
    X[1] = float("nan")  # member 1 breaks
    losses = F.cross_entropy(net(X).reshape(8, -1), y.reshape(-1), reduction="none").view(2, 4).mean(1)
    losses.sum().backward()
    assert torch.isfinite(net.lin1.weight.grad[0]).all() and torch.isnan(net.lin1.weight.grad[1]).any()
