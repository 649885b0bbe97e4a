"""How many members a population takes when the ``population`` setting is ``auto``: by device and free memory."""

from __future__ import annotations

import os

import torch
from omegaconf import DictConfig

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
    evaluation batch's activations (float32), with its own gathered images under ``data.split=per_seed``."""
    m, d = cfg.model, cfg.data
    widths = [784, m.num_hiddens_1, m.num_hiddens_2, m.num_outputs]
    params = sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
    train = d.batch_size * (widths[0] + 4 * (widths[1] + widths[2]) + 3 * widths[3])
    evaluation = d.eval_batch_size * (2 * sum(widths[1:]) + (widths[0] if d.get("split") == "per_seed" else 0))
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


