"""A Lightning callback that records hidden-activation statistics before and after the noise (exercise 3).

Hidden layer ``k`` is found generically from the network's ``nn.Linear`` modules, in order:
its activation *before* the noise is ``relu(linears[k-1](x))`` (a forward hook on ``linears[k-1]``)
and *after* the noise is the input of ``linears[k]`` (a forward pre-hook). Hooks exist only while
a recorded forward pass runs, so steps that are not recorded pay nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from dropout_lab.errors import InvalidValueError

#: Keys of every row, in order (a tidy table: pivot on ``source``, ``layer`` and ``stage``).
ROW_KEYS = ("source", "epoch", "step", "layer", "stage", "mean", "var", "zero_frac")


def hidden_linears(net: nn.Module) -> list[nn.Linear]:
    """The network's linear layers in registration order; hidden layer k sits between the k-th and (k+1)-th."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if len(linears) < 2:
        raise ValueError(f"{type(net).__name__} has {len(linears)} nn.Linear layer(s); need >= 2 to find hidden layers")
    return linears


def activation_stats(h: torch.Tensor) -> dict[str, float]:
    """Mean, variance (over all elements, population) and fraction of exact zeros of ``h``."""
    h = h.detach().float()
    var, mean = torch.var_mean(h, correction=0)
    zero_frac = (h == 0).float().mean()
    mean_, var_, zero_ = torch.stack([mean, var, zero_frac]).tolist()
    return {"mean": mean_, "var": var_, "zero_frac": zero_}


class ActivationMonitor(L.Callback):
    """Records activation statistics of each hidden layer, before and after the noise, into ``rows``.

    * ``source="train"``: the training batch of every ``every_n_steps``-th optimizer step
      (``step`` is the number of steps done before it, so 0, K, 2K, ...). Module-level forward
      hooks find the step's pass, so this holds when ``training_step`` trains a group of
      mini-batches (``data.batches_per_call``); they cost a few microseconds per forward pass.
    * ``source="probe_train"`` / ``"probe_eval"``: at the end of every training epoch, a fixed
      probe batch (the first ``probe_size`` validation images) with the noise on / off. The
      noisy probe pass runs under a forked RNG, so training draws the same noise with or
      without the monitor.
    """

    def __init__(self, every_n_steps: int = 50, probe_size: int = 512) -> None:
        if isinstance(every_n_steps, bool) or every_n_steps < 1:
            raise InvalidValueError("monitor.every_n_steps", every_n_steps, "an integer >= 1")
        if isinstance(probe_size, bool) or probe_size < 1:
            raise InvalidValueError("monitor.probe_size", probe_size, "an integer >= 1")
        self.every_n_steps = every_n_steps
        self.probe_size = probe_size
        self.rows: list[dict[str, Any]] = []
        self._probe: torch.Tensor | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []  # per-layer hooks of the pass being recorded
        self._watch: list[torch.utils.hooks.RemovableHandle] = []  # module-level hooks while training
        self._trainer: L.Trainer | None = None
        self._last_step = -1

    def _attach(self, net: nn.Module, **context: Any) -> None:
        """Register hooks that append one row per hidden layer and stage for each forward pass."""
        linears = hidden_linears(net)

        def add(layer: int, stage: str, h: torch.Tensor) -> None:
            with torch.no_grad():
                self.rows.append({**context, "layer": layer, "stage": stage, **activation_stats(h)})

        for k in range(1, len(linears)):
            self._handles.append(linears[k - 1].register_forward_hook(
                lambda _m, _inp, out, k=k: add(k, "before", F.relu(out.detach()))))
            self._handles.append(linears[k].register_forward_pre_hook(
                lambda _m, inp, k=k: add(k, "after", inp[0].detach())))

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @contextmanager
    def _recording(self, net: nn.Module, **context: Any) -> Iterator[None]:
        self._attach(net, **context)
        try:
            yield
        finally:
            self._detach()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Watch every training forward pass; one per optimizer step, however batches are grouped."""
        self._trainer = trainer
        self._last_step = -1
        self._watch = [pl_module.register_forward_pre_hook(self._before_forward),
                       pl_module.register_forward_hook(self._after_forward)]

    @staticmethod
    def _is_training_pass(module: nn.Module) -> bool:
        """A training step's forward pass: validation, test and probes run without gradients."""
        return module.training and torch.is_grad_enabled()

    def _before_forward(self, module: nn.Module, args: Any) -> None:
        """Record this pass if it trains step 0, K, 2K, ... (and was not recorded already)."""
        trainer = self._trainer
        assert trainer is not None  # on_train_start sets it before registering this hook
        step = trainer.global_step
        if self._is_training_pass(module) and step % self.every_n_steps == 0 and step != self._last_step:
            self._last_step = step
            self._attach(module, source="train", epoch=trainer.current_epoch + 1, step=step)

    def _after_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._is_training_pass(module):  # a probe pass detaches its own hooks
            self._detach()

    def _unwatch(self) -> None:
        for handle in self._watch:
            handle.remove()
        self._watch = []

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._unwatch()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._detach()
        self._unwatch()

    def _probe_batch(self, trainer: L.Trainer, device: torch.device) -> torch.Tensor:
        """The first ``probe_size`` validation images, taken once."""
        if self._probe is None:
            parts, n = [], 0
            datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning, not declared on Trainer
            for X, _ in datamodule.val_dataloader():
                parts.append(X[: self.probe_size - n])
                n += len(parts[-1])
                if n >= self.probe_size:
                    break
            self._probe = torch.cat(parts)
        return self._probe.to(device)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        X = self._probe_batch(trainer, pl_module.device)
        was_training = pl_module.training
        devices = [pl_module.device.index or 0] if pl_module.device.type == "cuda" else []
        context = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step}
        try:
            with torch.no_grad():
                for source, train_mode in (("probe_train", True), ("probe_eval", False)):
                    pl_module.train(train_mode)
                    with torch.random.fork_rng(devices=devices), self._recording(pl_module, source=source, **context):
                        pl_module(X)
        finally:
            pl_module.train(was_training)
