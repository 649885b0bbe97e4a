"""The from-scratch dropout_layer keeps expectations and drops at the requested rate."""

import math

import pytest
import torch

from dropout_lab.errors import InvalidValueError
from dropout_lab.models import DropoutMLPConcise, DropoutMLPScratch, dropout_layer

N = 200_000


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_kept_fraction_within_binomial_tolerance(p: float) -> None:
    torch.manual_seed(0)
    out = dropout_layer(torch.ones(N), p)
    kept = (out != 0).float().mean().item()
    sd = math.sqrt(p * (1 - p) / N)
    assert abs(kept - (1 - p)) < 5 * sd


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_survivors_scaled_and_mean_preserved(p: float) -> None:
    torch.manual_seed(1)
    X = torch.rand(N) + 0.5
    out = dropout_layer(X, p)
    survivors = out != 0
    torch.testing.assert_close(out[survivors], X[survivors] / (1 - p))
    # Var of each output element is X^2 p/(1-p); the mean of N of them is within 5 standard errors.
    se = math.sqrt((X**2).mean().item() * p / (1 - p) / N)
    assert abs(out.mean().item() - X.mean().item()) < 5 * se


def test_edge_rates() -> None:
    X = torch.randn(100, 7)
    assert dropout_layer(X, 0.0) is X
    assert torch.equal(dropout_layer(X, 1.0), torch.zeros_like(X))


@pytest.mark.parametrize("p", [1.5, -0.1, float("nan")])
def test_rate_outside_unit_interval_raises_value_error(p: float) -> None:
    with pytest.raises(ValueError, match=r"p=.*\[0, 1\]"):
        dropout_layer(torch.ones(3), p)


@pytest.mark.parametrize("cls", [DropoutMLPScratch, DropoutMLPConcise])
def test_no_noise_in_eval_mode_and_noise_in_training(cls: type) -> None:
    torch.manual_seed(0)
    net = cls()
    X = torch.rand(64, 1, 28, 28)
    net.eval()
    torch.testing.assert_close(net(X), net(X))
    net.train()
    assert not torch.equal(net(X), net(X))


@pytest.mark.parametrize("cls", [DropoutMLPScratch, DropoutMLPConcise])
def test_models_name_the_bad_field(cls: type) -> None:
    with pytest.raises(InvalidValueError, match="model.dropout_2=1.5"):
        cls(dropout_2=1.5)
    with pytest.raises(InvalidValueError, match="model.num_hiddens_1=0"):
        cls(num_hiddens_1=0)


def test_scratch_and_concise_compute_the_same_function_in_eval() -> None:
    torch.manual_seed(0)
    scratch = DropoutMLPScratch(num_hiddens_1=32, num_hiddens_2=16).eval()
    concise = DropoutMLPConcise(num_hiddens_1=32, num_hiddens_2=16).eval()
    linears = [m for m in concise.net if isinstance(m, torch.nn.Linear)]
    for src, dst in zip([scratch.lin1, scratch.lin2, scratch.lin3], linears):
        dst.load_state_dict(src.state_dict())
    X = torch.rand(8, 1, 28, 28)
    torch.testing.assert_close(scratch(X), concise(X))
