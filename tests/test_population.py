"""Fused populations: members independent of their mates, leaving alone, configs; stacked layers, per-member
noise and batches. What every run does (records, divergence, selection, pruning) is in ``test_engines.py``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from dropout_lab.config.compose import compose_train_config
from dropout_lab.data.batches import MemberBatches
from dropout_lab.errors import InvalidValueError
from dropout_lab.models import NoisyMLP, make_noise
from dropout_lab.models.counter_rng import MemberStreams
from dropout_lab.models.stacked import StackedDropConnectLinear, StackedLinear, StackedMLP
from dropout_lab.training.best_weights import best_row
from dropout_lab.training.fit import RunSpec, train, train_population
from dropout_lab.training.run_record import RunRecord, Status
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


def max_curve_difference(first: RunRecord, second: RunRecord) -> float:
    assert [row["epoch"] for row in first.curves] == [row["epoch"] for row in second.curves]
    diffs = [abs(a[k] - b[k]) for a, b in zip(first.curves, second.curves, strict=True) for k in CURVE_KEYS]
    diffs += [abs(first.final[k] - second.final[k]) for k in first.final]
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
def runs(tmp_path_factory: pytest.TempPathFactory):
    """``runs(cfg, ...)``: RunSpecs writing into fresh folders."""
    def _runs(*cfgs: DictConfig) -> list[RunSpec]:
        return [RunSpec(cfg, tmp_path_factory.mktemp("run")) for cfg in cfgs]

    return _runs


@pytest.fixture(scope="module")
def four(compose, runs) -> list[RunRecord]:
    """The population of the four ``MEMBERS``, trained together."""
    return train_population(runs(*(compose(*overrides) for overrides in MEMBERS.values())))


@pytest.fixture(scope="module")
def four_per_seed(compose, runs) -> list[RunRecord]:
    """The four ``MEMBERS`` trained together with ``data.split=per_seed``: four splits."""
    return train_population(runs(*(compose(*overrides, "data.split=per_seed") for overrides in MEMBERS.values())))


# Independence


@pytest.mark.parametrize("name", ["a", "b", "d"])
def test_a_member_in_a_population_of_four_equals_the_member_alone(compose, runs, four, name: str) -> None:
    (alone,) = train_population(runs(compose(*MEMBERS[name])))
    together = four[list(MEMBERS).index(name)]
    assert together.status is alone.status is Status.COMPLETED
    assert len(together.curves) == 2 and together.engine == "population(K=4, fp32)"
    assert max_curve_difference(together, alone) <= TOLERANCE


@pytest.mark.parametrize("name", ["a", "d"])
def test_with_a_split_per_seed_a_member_in_a_population_equals_the_member_alone(compose, runs, four_per_seed,
                                                                                name: str) -> None:
    """Each member trains and validates on its own split (drawn with its seed); the diverging member leaves after
    epoch 1, so epoch 2 validates the others on their own rows without it."""
    (alone,) = train_population(runs(compose(*MEMBERS[name], "data.split=per_seed")))
    together = four_per_seed[list(MEMBERS).index(name)]
    assert together.status is alone.status is Status.COMPLETED and len(together.curves) == 2
    assert four_per_seed[list(MEMBERS).index("nan")].status is Status.FAILED
    assert max_curve_difference(together, alone) <= TOLERANCE
    assert together.best == pytest.approx(alone.best, abs=TOLERANCE)


def test_a_diverging_member_leaves_alone_and_the_others_go_on(four: list[RunRecord]) -> None:
    failed = four[list(MEMBERS).index("nan")]
    assert failed.status is Status.FAILED and failed.reason.startswith("RunDivergedError: diverged: train_loss=")
    assert failed.final == {} and len(failed.curves) == 1 and not math.isfinite(failed.curves[0]["train_loss"])
    others = [r for r in four if r is not failed]
    assert all(r.status is Status.COMPLETED and math.isfinite(r.final["test_loss"]) for r in others)
    assert len({r.final["val_loss"] for r in others}) == 3  # members differ from each other


@pytest.mark.parametrize("overrides", [
    ["optim.momentum=0.9", "optim.weight_decay=0.001"],
    ["model=noisy", "noise=dropconnect", "optim.lr=0.2"],
    ["model=noisy", "noise=gamma", "optim.momentum=0.5"],
    ["optim.schedule=cosine", "optim.lr=0.3"],
])
def test_a_population_of_one_reproduces_the_run_on_its_own_network(compose, runs, tmp_path: Path,
                                                                   overrides: list[str]) -> None:
    """Same init, batch order, layers and optimizer as ``train()``: with the noise off (a population draws its
    masks from counter-based streams, a single run from the global RNG) the same curves up to matmul rounding."""
    cfg = compose("seed=1", *overrides, "model.dropout_1=0", "model.dropout_2=0")
    single = train(cfg, tmp_path)
    (member,) = train_population(runs(cfg))
    assert max_curve_difference(member, single) <= TOLERANCE
    assert member.config_hash == single.config_hash and member.config == single.config


def test_the_cosine_schedule_keeps_the_first_epoch_and_anneals_the_next(compose, runs) -> None:
    """Cosine annealing over 2 epochs: epoch 1 at the full lr (the constant run's epoch), epoch 2 at half of it.
    (A schedule is not a member key: runs with different schedules train in different populations.)"""
    (constant,) = train_population(runs(compose("seed=4", "optim.lr=0.3")))
    (cosine,) = train_population(runs(compose("seed=4", "optim.lr=0.3", "optim.schedule=cosine")))
    first, second = (abs(constant.curves[e]["train_loss"] - cosine.curves[e]["train_loss"]) for e in (0, 1))
    assert first == 0.0 and second > 1e-4


def test_member_sgd_follows_torch_schedulers_like_sgd() -> None:
    """The group's lr is a factor on every member's: a cosine schedule scales each member as it scales torch's SGD."""
    from dropout_lab.training.optim import MemberSGD
    torch.manual_seed(0)
    start, grads = torch.randn(2, 3, 4), [torch.randn(2, 3, 4) for _ in range(4)]
    member = torch.nn.Parameter(start.clone())
    alone = [torch.nn.Parameter(start[k].clone()) for k in range(2)]
    lrs = [0.1, 0.4]
    stacked = MemberSGD([member], lr=lrs, momentum=[0.0, 0.5], weight_decay=[0.01, 0.0])
    singles = [torch.optim.SGD([alone[k]], lr=lrs[k], momentum=m, weight_decay=wd)
               for k, (m, wd) in enumerate([(0.0, 0.01), (0.5, 0.0)])]
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4) for o in [stacked, *singles]]
    for grad in grads:
        member.grad = grad.clone()
        for k in range(2):
            alone[k].grad = grad[k].clone()
        for optimizer in [stacked, *singles]:
            optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    assert stacked.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi)), abs=1e-12)
    for k in range(2):
        torch.testing.assert_close(member.data[k], alone[k].data, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(member.data, start, atol=1e-3)


def test_a_pruned_member_leaves_and_its_mates_are_unchanged(compose, runs, four: list[RunRecord]) -> None:
    left: list[int] = []
    kept, pruned = train_population(runs(compose(*MEMBERS["a"]), compose("seed=7")),
                                    prune=lambda training, may_prune: [1],
                                    on_finish=lambda number, record: left.append(number))
    assert pruned.status is Status.PRUNED and "epoch 1" in pruned.reason and len(pruned.curves) == 1
    assert left == [1, 0]  # the pruned member was finished (stored, told) while its mate trained on
    assert max_curve_difference(kept, four[0]) <= TOLERANCE


def test_members_record_their_own_best_epochs(compose, runs) -> None:
    """An unstable member (lr 0.9, best epoch before the last of 4) beside a steady one: each is selected on its
    own curve, and the unstable one's best test metrics are those of the same member stopped at its best epoch."""
    unstable = compose("optim.lr=0.9", "seed=3", "trainer.max_epochs=4")
    steady = compose("seed=1", "trainer.max_epochs=4")
    first, second = train_population(runs(unstable, steady))
    for member in (first, second):
        row = best_row(member.curves, "val_acc")
        assert member.best["epoch"] == row["epoch"] and member.best["val_acc"] == row["val_acc"]
    assert first.best["epoch"] < 4
    (stopped,) = train_population(runs(compose("optim.lr=0.9", "seed=3", f"trainer.max_epochs={first.best['epoch']}")))
    assert first.best["test_acc"] == pytest.approx(stopped.final["test_acc"], abs=1e-6)
    if second.best["epoch"] == 4:
        assert second.best["test_acc"] == second.final["test_acc"]


# Configs


@pytest.mark.parametrize("override,field", [
    ("trainer.max_epochs=3", "trainer.max_epochs"),
    ("data.batch_size=128", "data.batch_size"),
    ("model.num_hiddens_1=128", "model.num_hiddens_1"),
    ("model=concise", "model._target_"),
])
def test_incompatible_configs_are_refused_naming_the_field(compose, runs, override: str, field: str) -> None:
    with pytest.raises(InvalidValueError, match=rf"^{field}=.*as in the population's first config \(run 1"):
        train_population(runs(compose("seed=0"), compose("seed=1", override)))


def test_noise_techniques_must_match_and_bad_values_are_named(compose, runs) -> None:
    with pytest.raises(InvalidValueError, match="^model.noise='gaussian'"):
        train_population(runs(compose("model=noisy", "noise=dropout"), compose("model=noisy", "noise=gaussian")))
    with pytest.raises(InvalidValueError, match=r"model.dropout_2=1.5 .*\[0, 1\]"):
        train_population(runs(compose("seed=0"), compose("seed=1", "model.dropout_2=1.5")))
    with pytest.raises(InvalidValueError, match="monitor.enabled"):
        train_population(runs(compose("monitor.enabled=true")))
    with pytest.raises(InvalidValueError, match="population"):
        train_population([])


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
    net = StackedMLP([0, 1, 2], [0.5, 0.2, 0.0], [0.5, 0.1, 0.0], 32, 16, noise="gaussian").eval()
    torch.manual_seed(1)
    single = NoisyMLP(32, 16, 0.2, 0.1, noise="gaussian").eval()
    X = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(net(X)[1], single(X))
    net.keep(torch.tensor([2, 1]))
    assert net.noise1.rates == [0.0, 0.2] and net.streams.seeds == [2, 1]
    torch.testing.assert_close(net(X)[1], single(X))


def test_each_member_shuffles_with_its_own_seed_whatever_its_mates() -> None:
    X, y = torch.arange(20.0).view(20, 1), torch.arange(20)
    pair = MemberBatches(X, y, 8, [5, 7], steps_per_call=2)
    alone = MemberBatches(X, y, 8, [7], steps_per_call=2)
    generator = torch.Generator().manual_seed(7)  # what member 7 draws: a seeded permutation per pass
    for _ in range(2):  # two passes: a new permutation each
        order = torch.randperm(20, generator=generator)
        batches_pair = [b for group in pair for b in group]
        batches_alone = [b for group in alone for b in group]
        for step, ((Xp, yp), (Xa, ya)) in enumerate(zip(batches_pair, batches_alone, strict=True)):
            expected = order[8 * step:8 * step + 8]
            assert Xp.shape == (2, len(expected), 1) and torch.equal(ya[0], expected)
            assert torch.equal(yp[1], ya[0]) and torch.equal(Xp[1, :, 0], expected.float())
            assert torch.equal(Xa[0], Xp[1])
    assert len(pair) == 2 and pair.steps == 3


# Noise in population mode


@pytest.mark.parametrize("name", sorted(ACTIVATION_CASES))
def test_population_noise_is_unbiased_per_member_with_the_documented_variance(name: str) -> None:
    rate, kwargs, variance = ACTIVATION_CASES[name]
    rates = [rate, rate / 2, 0.0]
    noise = make_noise(name, rates, **kwargs).train()
    streams = MemberStreams([0, 1, 2])
    streams.advance()
    out = noise(H.expand(len(rates), SAMPLES, -1).clone(), streams)
    for k, p in enumerate(rates[:2]):
        var = variance(H, p)
        se = (var / SAMPLES).sqrt()
        assert ((out[k].mean(0) - H).abs() <= 5 * se).all(), (k, (out[k].mean(0) - H) / se)
        assert abs(((out[k] - H) ** 2 / var).mean().item() - 1) < 0.05
    assert torch.equal(out[2], H.expand(SAMPLES, -1))  # rate 0: unchanged
    assert torch.equal(noise.eval()(out, streams), out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(ACTIVATION_CASES))
def test_a_member_draws_the_same_noise_whatever_its_mates(name: str, dtype: torch.dtype) -> None:
    """Member k's noise depends on its seed, the step and the layer only: the same alone or beside others, at any
    step, in float32 and bfloat16 (``dropout_concise`` draws ``dropout``'s masks in a population)."""
    rate, kwargs, _ = ACTIVATION_CASES[name]
    h = (torch.rand(3, 64, 16) + 0.1).to(dtype)
    together, alone = MemberStreams([4, 9, 5]), MemberStreams([9])
    for step in range(3):
        together.advance()
        alone.advance()
        out = make_noise(name, [rate / 2, rate, 0.0], **kwargs).train()(h, together)
        single = make_noise(name, [rate], **kwargs).train()(h[1:2], alone)
        assert out.dtype == dtype and torch.equal(out[1], single[0]), step
        assert not torch.equal(out[1], h[1]) and torch.equal(out[2], h[2])


def test_population_dropconnect_is_unbiased_per_member_and_shares_a_mask_per_batch() -> None:
    draws, rates = 3000, [0.5, 0.2, 0.0]
    layer = StackedDropConnectLinear(32, 8, generators(0, 1, 2), rates).train()
    x = torch.randn(1, 32)
    streams = MemberStreams([10, 11, 12])

    def step() -> MemberStreams:
        streams.advance()
        return streams

    with torch.no_grad():
        expected = layer.eval()(x)[:, 0]
        outs = torch.stack([layer.train()(x, step())[:, 0] for _ in range(draws)])  # [draws, K, 8]
        for k, p in enumerate(rates[:2]):
            se = (p / (1 - p) * (layer.weight[k].t() ** 2 * x**2).sum(1) / draws).sqrt()
            assert ((outs[:, k].mean(0) - expected[k]).abs() <= 5 * se).all()
        assert torch.equal(outs[:, 2], expected[2].expand(draws, -1))
        out = layer(x.expand(4, -1), step())
        assert (out == out[:, :1]).all()


def test_population_training_step_keeps_gradients_per_member() -> None:
    net = StackedMLP([0, 1], [0.5, 0.5], [0.5, 0.5], 16, 8).train()
    X, y = torch.rand(2, 4, 784), torch.randint(0, 10, (2, 4))
    X[1] = float("nan")  # member 1 breaks
    losses = F.cross_entropy(net(X).reshape(8, -1), y.reshape(-1), reduction="none").view(2, 4).mean(1)
    losses.sum().backward()
    assert torch.isfinite(net.lin1.weight.grad[0]).all() and torch.isnan(net.lin1.weight.grad[1]).any()
