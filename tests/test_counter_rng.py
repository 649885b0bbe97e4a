"""The populations' counter-based random numbers: exact arithmetic, distributions, and members independent of K."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from dropout_lab.models import counter_rng
from dropout_lab.models.counter_rng import MemberStreams, member_key, mix64, mix64_int

N = 200_000


def as_unsigned(value: int) -> int:
    return value & ((1 << 64) - 1)


def test_tensor_mix64_wraps_exactly_as_the_integer_reference() -> None:
    """int64 tensor arithmetic must wrap modulo 2**64: checked against Python integers on extreme and random words."""
    words = [0, 1, -1, 2**63 - 1, -(2**63), 0x0123456789ABCDEF, *torch.randint(-(2**63), 2**63 - 1, (500,)).tolist()]
    got = mix64(torch.tensor(words, dtype=torch.int64)).tolist()
    assert [as_unsigned(g) for g in got] == [mix64_int(w) for w in words]


def test_a_draw_is_splitmix64_at_the_members_counter() -> None:
    """Member seed 7, step 3, slot 2, position 5: ``mix64(start + counter * gamma)`` with the documented counter."""
    streams = MemberStreams([11, 7])
    for _ in range(3):
        streams.advance()
    start, gamma = member_key(7)
    counter = (((3 * counter_rng.SLOTS + 2) * counter_rng.SUBS) << 32) + 5
    expected = (mix64_int(start + counter * gamma) >> 40) / 2**24
    assert streams.uniform(2, (10,))[1, 5].item() == expected


def test_uniforms_are_uniform_and_streams_are_uncorrelated() -> None:
    streams = MemberStreams([0, 1])
    streams.advance()
    u = streams.uniform(0, (N,))
    assert stats.kstest(u[0].numpy(), "uniform").pvalue > 1e-3
    counts = torch.histc(u[0], bins=64, min=0, max=1)
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3
    bound = 5 / math.sqrt(N)
    others = {"mate": u[1], "next slot": streams.uniform(1, (N,))[0], "next position": u[0].roll(1)}
    streams.advance()
    others["next step"] = streams.uniform(0, (N,))[0]
    for name, other in others.items():
        r = torch.corrcoef(torch.stack([u[0], other]))[0, 1].item()
        assert abs(r) < bound, (name, r)


def test_normals_and_gammas_have_their_distributions() -> None:
    streams = MemberStreams([3])
    streams.advance()
    assert stats.kstest(streams.normal(0, (N,))[0].numpy(), "norm").pvalue > 1e-3
    for alpha in (0.25, 1.0, 4.0):  # below 1 (boosted), at 1, above 1
        draws = streams.gamma_draw(1, (N // 4,), torch.tensor([alpha]).view(1, 1, 1))[0]
        assert (draws > 0).all() and stats.kstest(draws.numpy(), "gamma", args=(alpha,)).pvalue > 1e-3, alpha


def test_a_gamma_draw_is_the_first_accepted_round_drawn_at_its_own_subs() -> None:
    """Rounds after the first draw only where values are pending: each value must equal the one the whole-block
    draws of its round give (normal at sub 1 + 2r, uniform at 2 + 2r, U ** (1 / alpha) at sub 0 for alpha < 1)."""
    alpha = torch.tensor([0.4, 1.0, 2.5, 19.0]).view(-1, 1, 1)
    streams = MemberStreams([21, 22, 23, 24])
    streams.advance()
    shape = (64, 50)
    got = streams.gamma_draw(3, shape, alpha)
    d = torch.where(alpha < 1, alpha + 1, alpha) - 1 / 3
    c = 1 / torch.sqrt(9 * d)
    expected, pending, rounds = torch.zeros(4, *shape), torch.ones(4, *shape, dtype=torch.bool), 0
    while pending.any():
        x, u = streams.normal(3, shape, 1 + 2 * rounds), streams.uniform(3, shape, 2 + 2 * rounds)
        v = (1 + c * x) ** 3
        ok = pending & (v > 0) & (torch.log1p(-u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp(min=1e-30)))
        expected, pending, rounds = torch.where(ok, d * v, expected), pending & ~ok, rounds + 1
    expected = torch.where(alpha < 1, expected * (1 - streams.uniform(3, shape, 0)) ** (1 / alpha), expected)
    assert rounds >= 3 and torch.equal(got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masks_keep_with_probability_one_minus_p_and_the_backward_pass_applies_the_same_mask(dtype) -> None:
    rates = torch.tensor([0.5, 0.2, 0.0, 1.0]).view(-1, 1, 1)
    threshold = torch.tensor([0.5, 0.2, -1.0, 2.0]).view(-1, 1, 1)
    scale = torch.tensor([2.0, 1.25, 1.0, 0.0]).view(-1, 1, 1)
    streams = MemberStreams([0, 1, 2, 3])
    streams.advance()
    x = torch.ones(4, 256, 512, dtype=dtype, requires_grad=True)
    out = streams.scale_by_mask(x, 0, threshold, scale)
    out.backward(torch.full_like(out, 3.0))
    kept = (out != 0).float().mean((1, 2))
    for k, p in enumerate(rates.view(-1).tolist()):
        assert abs(kept[k].item() - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / x[0].numel()) + 1e-9, (k, kept[k])
    assert out.dtype == dtype and torch.equal(out[1].unique().float(), torch.tensor([0.0, 1.25]))
    assert torch.equal(x.grad, 3.0 * out.detach())  # d(x * mask)/dx = mask: the kept mask


def test_the_compiled_kernel_and_the_eager_ops_give_identical_masks() -> None:
    streams = MemberStreams([5, 6, 7])
    streams.advance()
    x = torch.randn(3, 33, 70).to(torch.bfloat16)
    args = (streams.offset(1), streams.gamma, torch.full((3, 1, 1), 0.3), torch.full((3, 1, 1), 1 / 0.7))
    eager, compiled = counter_rng._scale_by_mask(x, *args), counter_rng._fused_scale_by_mask(x, *args)
    assert all(torch.equal(a, b) for a, b in zip(eager, compiled, strict=True))


def test_a_members_numbers_do_not_depend_on_its_mates_or_on_those_who_left() -> None:
    """Member seed 9 alone, beside others, and after its mates left: the same numbers at every step and slot."""
    together, alone = MemberStreams([4, 9, 5]), MemberStreams([9])
    threshold, scale = torch.full((1, 1, 1), 0.5), torch.full((1, 1, 1), 2.0)
    x = torch.randn(3, 16, 24)
    for step in range(4):
        if step == 2:
            together.keep(torch.tensor([1]))  # mates 4 and 5 leave between steps
        together.advance()
        alone.advance()
        row = 1 if step < 2 else 0
        assert torch.equal(together.uniform(3, (16, 24))[row], alone.uniform(3, (16, 24))[0])
        assert torch.equal(together.normal(0, (7,))[row], alone.normal(0, (7,))[0])
        k = torch.full((together.start.shape[0], 1, 1), 0.5)
        assert torch.equal(together.gamma_draw(1, (9,), k)[row], alone.gamma_draw(1, (9,), k[:1])[0])
        K = together.start.shape[0]
        mine = together.scale_by_mask(x[:K], 2, threshold.expand(K, 1, 1), scale.expand(K, 1, 1))[row]
        assert torch.equal(mine, alone.scale_by_mask(x[row:row + 1], 2, threshold, scale)[0])


def test_slots_and_subs_outside_the_counter_layout_are_refused() -> None:
    streams = MemberStreams([0])
    with pytest.raises(ValueError, match="slot 8"):
        streams.offset(counter_rng.SLOTS)
    with pytest.raises(ValueError, match="sub 64"):
        streams.offset(0, counter_rng.SUBS)
