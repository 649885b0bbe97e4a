"""SGD with one learning rate, momentum and weight decay per population member."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch


class MemberSGD(torch.optim.Optimizer):
    """``torch.optim.SGD`` (no dampening, no Nesterov) with one lr, momentum and weight decay per member.

    Dimension 0 of every parameter is the member. Member ``k``'s update is SGD's at its own values:
    ``g = grad + wd * p``, ``buf = momentum * buf + g`` (``buf`` starts at 0, so the first step
    takes ``buf = g`` as SGD does), ``p -= lr * buf``. All of it is elementwise, so a member's
    update does not depend on its mates. (``torch.optim.SGD`` takes one value per parameter group,
    and a member is a row of every parameter, not a group.) The parameter group's ``lr`` (1.0)
    multiplies every member's lr, so torch's learning-rate schedulers apply to all members alike.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: Sequence[float], momentum: Sequence[float],
                 weight_decay: Sequence[float]) -> None:
        super().__init__(params, {"lr": 1.0})  # the group's lr: a factor on every member's (a scheduler's handle)
        device = self.param_groups[0]["params"][0].device
        self.member_values = {name: torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)
                              for name, values in (("lr", lr), ("momentum", momentum),
                                                   ("weight_decay", weight_decay))}
        self.member_values["neg_lr"] = -self.member_values["lr"]
        self._uses = {"weight_decay": any(weight_decay), "momentum": any(momentum)}  # no device sync per step

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        values = self.member_values
        decay, momentum = self._uses["weight_decay"], self._uses["momentum"]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = torch.addcmul(p.grad, p, values["weight_decay"]) if decay else p.grad
                if momentum:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    d = state["momentum_buffer"].mul_(values["momentum"]).add_(d)
                p.addcmul_(d, values["neg_lr"], value=group["lr"])
        return loss

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at positions ``index`` (call after the parameters were compacted)."""
        self.member_values = {name: v.index_select(0, index) for name, v in self.member_values.items()}
        self._uses = {name: bool(self.member_values[name].any()) for name in self._uses}
        for state in self.state.values():
            if "momentum_buffer" in state:
                state["momentum_buffer"] = state["momentum_buffer"].index_select(0, index)
