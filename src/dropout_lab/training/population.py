"""A population: K compatible runs trained together as one stacked network, each still a run of its own.

Members share architecture, noise technique, epochs, batch size and data; each has its own seed,
dropout rates, learning rate, momentum and weight decay. Member ``k`` is independent of its mates:

* its initial weights come from a CPU generator seeded with its ``seed``, drawn as ``nn.Linear``
  draws them after ``torch.manual_seed(seed)``;
* its noise comes from a generator of its own on the training device, seeded with its ``seed``
  (on the CPU, the init generator, continued: the stream the single run's global RNG continues);
* its batch order comes from a generator seeded with its ``data.shuffle_seed``, as the single run's;
* its loss is its own mean cross-entropy; the population minimises the sum of the members' losses,
  so each member's gradients are those of its own loss, and :class:`PopulationSGD` steps each
  member with its own hyperparameters.

So adding or removing members changes nobody else's numbers (up to the summation order inside
the batched matmuls). A member whose training loss stops being finite is marked failed (checked
after every group of ``data.batches_per_call`` steps) and removed; a member can be removed
(``remove``, e.g. pruned) between epochs; removed members leave the stacked tensors, so they stop
costing compute.

Results: each member is a :class:`~dropout_lab.training.run_record.RunRecord` that fills as it
trains (curves in ``EpochRecorder``'s shape); :meth:`PopulationClassifier.results` gives them as
plain dicts. A member's ``seconds`` per epoch (and its
``wall_time_s``) is its equal share of the population's wall time for that epoch, so the members'
times add up to the population's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import execution_whitelist, instantiate
from omegaconf import DictConfig, OmegaConf

from dropout_lab.config.engine import (
    MEMBER_KEYS,
    MODEL_TECHNIQUES,
    NOISY_TARGET,
    PRECISIONS,
    engine_name,
    is_member_key,
)
from dropout_lab.config.targets import INSTANTIABLE_TARGETS
from dropout_lab.config.validate import validate_config
from dropout_lab.data.population_batches import PopulationBatches, PopulationBatchGroup, PopulationDataModule
from dropout_lab.errors import InvalidValueError, RunDivergedError
from dropout_lab.models.population_mlp import StackedMLP
from dropout_lab.training.best_weights import best_metrics, improves, selection_metric
from dropout_lab.training.profiler import NoProfiler
from dropout_lab.training.run_record import RunRecord, config_hash
from dropout_lab.training.train import quiet_lightning

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Per-member SGD
# ---------------------------------------------------------------------------------------------

class PopulationSGD(torch.optim.Optimizer):
    """``torch.optim.SGD`` (no dampening, no Nesterov) with one lr, momentum and weight decay per member.

    Dimension 0 of every parameter is the member. Member ``k``'s update is SGD's at its own values:
    ``g = grad + wd * p``, ``buf = momentum * buf + g`` (``buf`` starts at 0, so the first step
    takes ``buf = g`` as SGD does), ``p -= lr * buf``. All of it is elementwise, so a member's
    update does not depend on its mates.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: Sequence[float], momentum: Sequence[float],
                 weight_decay: Sequence[float]) -> None:
        super().__init__(params, {})
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
                p.addcmul_(d, values["neg_lr"])
        return loss

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the members at positions ``index`` (call after the parameters were compacted)."""
        self.member_values = {name: v.index_select(0, index) for name, v in self.member_values.items()}
        self._uses = {name: bool(self.member_values[name].any()) for name in self._uses}
        for state in self.state.values():
            if "momentum_buffer" in state:
                state["momentum_buffer"] = state["momentum_buffer"].index_select(0, index)


# ---------------------------------------------------------------------------------------------
# Members and the Lightning module
# ---------------------------------------------------------------------------------------------

class PopulationClassifier(L.LightningModule):
    """Cross-entropy training of a :class:`StackedMLP` with per-member SGD; per-member curves and test metrics.

    ``members[k]`` is the record of the run in row ``k`` at the start; ``active`` lists the members (by number)
    still in the stack, in row order. Batches are ``PopulationBatchGroup``s: one optimizer step
    per mini-batch, as ``Classifier`` with ``data.batches_per_call``.
    """

    def __init__(self, net: StackedMLP, members: Sequence[RunRecord], lr: Sequence[float], momentum: Sequence[float],
                 weight_decay: Sequence[float], metric: str = "val_acc") -> None:
        super().__init__()
        self.net = net
        self.members = list(members)
        self.active = list(range(len(self.members)))
        self.optim_values = {"lr": list(lr), "momentum": list(momentum), "weight_decay": list(weight_decay)}
        self.automatic_optimization = False
        self._loss_sum = torch.zeros(len(self.members))
        self._seen = 0
        self._epoch_start = 0.0
        self._epoch_members = len(self.members)
        self._test_start = 0.0
        self._eval: dict[str, torch.Tensor] = {}
        #: Model selection (``best_weights.py``): each member's best-``metric`` epoch, and the stacked
        #: parameters whose row k holds active member k's weights at that epoch.
        self.metric = metric
        self._best_epoch: dict[int, int] = {}
        self._best_params: dict[str, torch.Tensor] = {}
        self._testing_best = False
        #: Called as ``on_leave(number, member)`` when a member leaves before the end (diverged or pruned).
        self.on_leave: Callable[[int, RunRecord], None] | None = None

    # setup

    def on_fit_start(self) -> None:
        """Noise generators on the training device (on the CPU the init generators simply continue)."""
        if self.device.type != "cpu":
            self.net.generators = [torch.Generator(self.device).manual_seed(self.members[m].seed) for m in self.active]

    def configure_optimizers(self) -> PopulationSGD:
        return PopulationSGD(self.net.parameters(), **self.optim_values)

    # training

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self._epoch_members = len(self.active)
        self._loss_sum = torch.zeros(len(self.active), device=self.device)
        self._seen = 0

    def training_step(self, batch: PopulationBatchGroup, batch_idx: int) -> None:
        if not self.active:
            return
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)
        for X, y in batch:
            K, b = y.shape
            logits = self.net(X)
            losses = F.cross_entropy(logits.reshape(K * b, -1), y.reshape(-1), reduction="none").view(K, b).mean(1)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(losses.sum())
            optimizer.step()
            self._loss_sum += losses.detach() * b
            self._seen += b
        self._remove_diverged()

    def _remove_diverged(self) -> None:
        finite = torch.isfinite(self._loss_sum)
        if bool(finite.all()):
            return
        losses = (self._loss_sum / self._seen).tolist()
        seconds = (time.perf_counter() - self._epoch_start) / self._epoch_members
        for row in (~finite).nonzero().flatten().tolist():
            member = self.members[self.active[row]]
            epoch = self.current_epoch + 1
            member.curves.append({"epoch": epoch, "train_loss": losses[row], "seconds": seconds})
            error = RunDivergedError(f"diverged: train_loss={losses[row]} at epoch {epoch}")
            self._finish(member, "failed", f"{type(error).__name__}: {error}")
            log.warning("member %d (seed %d) %s", self.active[row], member.seed, error)
        left = [self.active[row] for row, ok in enumerate(finite.tolist()) if not ok]
        self._keep([row for row, ok in enumerate(finite.tolist()) if ok])
        for number in left:
            self._left(number)

    # evaluation: every member on the same batch

    def _start_evaluation(self) -> None:
        K = len(self.active)
        self._eval = {"loss": torch.zeros(K, device=self.device), "correct": torch.zeros(K, device=self.device),
                      "n": torch.zeros((), device=self.device)}

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        X, y = batch
        if not self.active:
            return
        logits = self.net(X)
        K, b, _ = logits.shape
        losses = F.cross_entropy(logits.reshape(K * b, -1), y.repeat(K), reduction="none")
        self._eval["loss"] += losses.view(K, b).sum(1)
        self._eval["correct"] += (logits.argmax(-1) == y).sum(1)
        self._eval["n"] += b

    def _evaluated(self) -> tuple[list[float], list[float]]:
        n = self._eval["n"]
        return (self._eval["loss"] / n).tolist(), (self._eval["correct"] / n).tolist()

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch)

    def on_validation_epoch_end(self) -> None:
        """Each member's curve row, before callbacks' ``on_train_epoch_end`` (which may prune members)."""
        if self.trainer.sanity_checking or not self.active:
            return
        val_loss, val_acc = self._evaluated()
        train_loss = (self._loss_sum / max(self._seen, 1)).tolist()
        seconds = (time.perf_counter() - self._epoch_start) / self._epoch_members
        for row, number in enumerate(self.active):
            self.members[number].curves.append({"epoch": self.current_epoch + 1, "train_loss": train_loss[row],
                                                "val_loss": val_loss[row], "val_acc": val_acc[row],
                                                "seconds": seconds})
        self._keep_best(val_acc if self.metric == "val_acc" else val_loss)

    def _keep_best(self, values: list[float]) -> None:
        """Copy the weights of the members whose validation ``metric`` improved this epoch."""
        rows = [row for row, number in enumerate(self.active) if improves(values[row], self._best_value(number),
                                                                           self.metric)]
        if not rows:
            return
        for row in rows:
            self._best_epoch[self.active[row]] = self.current_epoch + 1
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        for name, param in self.net.named_parameters():
            if name not in self._best_params:
                self._best_params[name] = param.detach().clone()
            else:
                self._best_params[name][index] = param.detach()[index]

    def _best_value(self, number: int) -> float | None:
        epoch = self._best_epoch.get(number)
        return None if epoch is None else self.members[number].curves[epoch - 1][self.metric]

    def use_best_weights(self) -> bool:
        """Load every active member's best-epoch weights for a second test; False if none differs from the last."""
        if all(self._best_epoch.get(n) in (None, len(self.members[n].curves)) for n in self.active):
            return False
        for name, param in self.net.named_parameters():
            param.data.copy_(self._best_params[name])
        self._testing_best = True
        return True

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()
        self._test_start = time.perf_counter()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch)

    def on_test_epoch_end(self) -> None:
        """Completed members get their final metrics (noise off) and their share of the test pass's time."""
        if not self.active:
            return
        test_loss, test_acc = self._evaluated()
        share = (time.perf_counter() - self._test_start) / len(self.active)
        for row, number in enumerate(self.active):
            member = self.members[number]
            tested = {"test_loss": test_loss[row], "test_acc": test_acc[row]}
            best_epoch = self._best_epoch.get(number)
            if self._testing_best:  # the second pass, on the best-epoch weights
                if best_epoch is not None and best_epoch != len(member.curves):
                    member.best = best_metrics(member.curves[best_epoch - 1], tested)
                member.wall_time_s += share
                continue
            last = member.curves[-1]
            member.final = {"val_loss": last["val_loss"], "val_acc": last["val_acc"], **tested}
            if best_epoch == len(member.curves):
                member.best = best_metrics(last, tested)
            member.status = "completed"
            member.wall_time_s = sum(row["seconds"] for row in member.curves) + share

    # members leaving

    def remove(self, number: int, status: str = "pruned", reason: str | None = None) -> None:
        """Take member ``number`` out of the population (between epochs or steps), recording why."""
        if number not in self.active:
            raise ValueError(f"member {number} is not in the population (active: {self.active})")
        self._finish(self.members[number], status, reason)
        self._keep([row for row, m in enumerate(self.active) if m != number])
        self._left(number)

    def _left(self, number: int) -> None:
        if self.on_leave is not None:
            self.on_leave(number, self.members[number])

    def fail_running(self, reason: str) -> None:
        """Mark the members still in training as failed with ``reason`` (training stopped by an exception)."""
        for number in self.active:
            if self.members[number].status == "running":
                self._finish(self.members[number], "failed", reason)

    def _finish(self, member: RunRecord, status: str, reason: str | None) -> None:
        member.status = status
        member.reason = reason
        member.wall_time_s = sum(row["seconds"] for row in member.curves)

    def _keep(self, rows: list[int]) -> None:
        """Keep the members in stack rows ``rows``: compact parameters, optimizer, generators and batches."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.net.keep(index)
        if self._trainer is not None:
            for optimizer in self.trainer.optimizers:
                if isinstance(optimizer, PopulationSGD):
                    optimizer.keep(index)
            if isinstance(batches := self.trainer.train_dataloader, PopulationBatches):
                batches.keep(index)
            if not rows:
                self.trainer.should_stop = True
        self._loss_sum = self._loss_sum.index_select(0, index)
        self._best_params = {name: value.index_select(0, index) for name, value in self._best_params.items()}
        self.active = [self.active[row] for row in rows]

    def results(self) -> list[dict[str, Any]]:
        """Every member's run-record content, in the order of ``members``."""
        return [asdict(member) for member in self.members]


# ---------------------------------------------------------------------------------------------
# From run configs
# ---------------------------------------------------------------------------------------------

def _container(cfg: DictConfig) -> dict[str, Any]:
    return cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def check_population(cfgs: Sequence[DictConfig]) -> None:
    """Refuse configs that cannot train as one population, naming the field (``InvalidValueError``).

    Each config is first checked as ``train`` checks it; then every config must equal the first
    except in :data:`MEMBER_KEYS` (and the bookkeeping keys ``name``, ``results_dir``, ``metric``,
    ``optuna``); the instruments and loggers of the per-run path are refused.
    """
    if not cfgs:
        raise InvalidValueError("population", [], "at least one run config")
    for cfg in cfgs:
        validate_config(cfg)
        with execution_whitelist(INSTANTIABLE_TARGETS), torch.device("meta"):
            instantiate(cfg.model)  # the single run's checks of rates, widths and noise, without drawing weights
    first = _flat(_container(cfgs[0]))
    for number, cfg in enumerate(cfgs[1:], start=1):
        flat = _flat(_container(cfg))
        for key in sorted(first.keys() | flat.keys()):
            if not is_member_key(key) and first.get(key) != flat.get(key):
                raise InvalidValueError(key, flat.get(key), f"{first.get(key)!r} as in the population's first config "
                                        f"(run {number} differs): members may differ only in {', '.join(MEMBER_KEYS)}")
    cfg = cfgs[0]
    if cfg.model._target_ not in (*MODEL_TECHNIQUES, NOISY_TARGET):
        raise InvalidValueError("model._target_", cfg.model._target_, f"one of {[*MODEL_TECHNIQUES, NOISY_TARGET]}")
    for key in ("monitor.enabled", "test_time.enabled"):
        if OmegaConf.select(cfg, key):
            raise InvalidValueError(key, True, "false in a population (train this run per-run for its instruments)")
    if cfg.logger:
        raise InvalidValueError("logger", OmegaConf.to_container(cfg.logger),
                                "null in a population (each member's curves are in its result)")


def build_population(cfgs: Sequence[DictConfig]) -> tuple[PopulationDataModule, PopulationClassifier]:
    """The data module and Lightning module that train ``cfgs`` as one population (checked first)."""
    check_population(cfgs)
    cfg = cfgs[0]
    model = _container(cfg.model)
    technique = model["noise"] if model["_target_"] == NOISY_TARGET else MODEL_TECHNIQUES[model["_target_"]]
    members = [RunRecord(config=_container(c), seed=int(c.seed), config_hash=config_hash(c), engine="population")
               for c in cfgs]
    net = StackedMLP([torch.Generator().manual_seed(m.seed) for m in members],
                     [c.model.dropout_1 for c in cfgs], [c.model.dropout_2 for c in cfgs],
                     num_hiddens_1=model["num_hiddens_1"], num_hiddens_2=model["num_hiddens_2"],
                     num_outputs=model["num_outputs"], noise=technique, noise_kwargs=model.get("noise_kwargs"))
    module = PopulationClassifier(net, members, lr=[c.optim.lr for c in cfgs],
                                  momentum=[c.optim.momentum for c in cfgs],
                                  weight_decay=[c.optim.weight_decay for c in cfgs],
                                  metric=selection_metric(cfg.metric))
    data = _container(cfg.data)
    data.pop("_target_")
    data.pop("shuffle_seed")
    datamodule = PopulationDataModule(shuffle_seeds=[c.data.shuffle_seed for c in cfgs], **data)
    return datamodule, module


def fit_population(cfg: DictConfig, datamodule: PopulationDataModule, module: PopulationClassifier,
                   callbacks: Sequence[L.Callback] = (), precision: str = "fp32",
                   **trainer_kwargs: Any) -> list[dict[str, Any]]:
    """Train, validate every epoch and test the completed members once (noise off); return every member's result.

    ``cfg`` is any member's config (they share the trainer settings and device). ``precision`` is
    ``fp32`` or ``bf16`` (bfloat16 autocast, Lightning's ``bf16-mixed``: the matmuls in bf16, the
    weights, optimizer and losses in float32); each member's ``engine`` says which, e.g.
    ``population(K=8, bf16)``. ``trainer_kwargs`` are extra ``lightning.Trainer`` arguments. If
    training raises, the members still running are marked failed with the reason (in
    ``module.members``) and the exception propagates.
    """
    if precision not in PRECISIONS:
        raise InvalidValueError("population_precision", precision, f"one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        trainer_kwargs["precision"] = "bf16-mixed"
    engine = engine_name(len(module.members), precision)
    for member in module.members:
        member.engine = engine
    try:  # from here on, any exception (Ctrl-C included) is recorded as the running members' reason
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        quiet_lightning()
        with execution_whitelist(INSTANTIABLE_TARGETS):
            trainer = instantiate(cfg.trainer, logger=False, profiler=NoProfiler(), callbacks=list(callbacks),
                                  **trainer_kwargs)
        if precision == "bf16":  # autocast casts the images to bf16: gather them as such
            datamodule.train_dtype = torch.bfloat16
        trainer.fit(module, datamodule=datamodule)
        if trainer.interrupted:
            raise KeyboardInterrupt("training interrupted")
        if module.active:
            trainer.test(module, datamodule=datamodule, verbose=False)
            if module.use_best_weights():  # selection on validation: test the best epochs' weights too
                trainer.test(module, datamodule=datamodule, verbose=False)
    except BaseException as exc:  # record why, including Ctrl-C and SystemExit, then re-raise
        module.fail_running(f"{type(exc).__name__}: {exc}")
        raise
    return module.results()


def train_population(cfgs: Sequence[DictConfig], callbacks: Sequence[L.Callback] = (), precision: str = "fp32",
                     **trainer_kwargs: Any) -> list[dict[str, Any]]:
    """Train the runs ``cfgs`` as one population; one result per config, in order (see the module docstring)."""
    datamodule, module = build_population(cfgs)
    return fit_population(cfgs[0], datamodule, module, callbacks, precision, **trainer_kwargs)


# ---------------------------------------------------------------------------------------------
# How many members: ``population=auto``
# ---------------------------------------------------------------------------------------------

#: ``auto``'s largest population per device kind. CPU: ``max(8, 2 x torch threads per worker)``, at most
#: 64: the per-member time is flat from K = 4 to 32 (fp32) and lowest at K = 4-8 (bf16) with 1-2 threads
#: per worker (``bench_population_step.py``); a batched matmul shares its members between the threads,
#: so more threads take more members; a larger K only delays pruning and feedback and balances worse
#: across workers. GPU: one chapter member is a few MFLOP per step, far too little for a GPU; 256
#: members make matmuls of 256 x [256 x 784] @ [784 x 256], big enough to fill one.
AUTO_MAX_MEMBERS = {"cpu": 8, "cuda": 256}
AUTO_MAX_CPU_MEMBERS = 64
#: ``auto`` lets the populations of all workers of a host take at most this share of the free memory.
AUTO_MEMORY_SHARE = 0.5


def population_device(cfg: DictConfig) -> str:
    """``cuda`` or ``cpu``: where a run of ``cfg`` trains (``trainer.accelerator``; ``auto``: CUDA if available)."""
    accelerator = str(cfg.trainer.accelerator)
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def member_bytes(cfg: DictConfig) -> int:
    """A generous estimate of one member's memory: parameters, gradients, momentum and a DropConnect copy
    of the weights, the gathered training batch with its activations, masks and gradients, and one
    evaluation batch's activations (float32)."""
    m, d = cfg.model, cfg.data
    widths = [784, m.num_hiddens_1, m.num_hiddens_2, m.num_outputs]
    params = sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
    train = d.batch_size * (widths[0] + 4 * (widths[1] + widths[2]) + 3 * widths[3])
    evaluation = 2 * d.eval_batch_size * sum(widths[1:])
    return 4 * (4 * params + train + evaluation)


def free_memory_bytes(device: str) -> int:
    """Free memory where the populations train: the GPU's (``cuda``) or the host's ``MemAvailable``."""
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def auto_population_size(cfg: DictConfig, workers: int = 1) -> int:
    """``population=auto``: the largest K within the device's cap (:data:`AUTO_MAX_MEMBERS`; on a CPU
    ``max(8, 2 x threads)``, at most 64) whose members, in each of ``workers`` workers on the host, fit
    into :data:`AUTO_MEMORY_SHARE` of the free memory."""
    device = population_device(cfg)
    cap = AUTO_MAX_MEMBERS[device]
    if device == "cpu":
        threads = cfg.threads or max(1, (os.cpu_count() or 1) // max(workers, 1))
        cap = min(AUTO_MAX_CPU_MEMBERS, max(cap, 2 * threads))
    by_memory = int(AUTO_MEMORY_SHARE * free_memory_bytes(device) / max(workers, 1)) // member_bytes(cfg)
    return max(1, min(cap, by_memory))


class PruneMembers(L.Callback):
    """Removes members after an epoch: ``should_prune(number, member)`` sees each active member's curves so far.

    ``number`` is the member's position in the population's configs; an Optuna glue would report
    ``member.curves[-1][metric]`` to the member's trial and return ``trial.should_prune()``.
    """

    def __init__(self, should_prune: Callable[[int, RunRecord], bool]) -> None:
        self.should_prune = should_prune

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, PopulationClassifier)
        for number in list(pl_module.active):
            member = pl_module.members[number]
            if self.should_prune(number, member):
                epoch = member.curves[-1]["epoch"]
                pl_module.remove(number, "pruned", f"TrialPruned: Trial was pruned at epoch {epoch}.")
