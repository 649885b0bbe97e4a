"""What configs may instantiate: Hydra 1.4's execution whitelist, shared by training and evaluation.

The package's own targets are always allowed. A run adds its own with the config key
``instantiable`` (``instantiable=[mypkg.*]``), so a user's noise technique or network is chosen by
``_target_`` without editing the package; any other target is refused before anything is built.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from dropout_lab.errors import InvalidValueError

#: Targets every run config may instantiate (``_target_`` of data, model, noise, trainer and logger).
INSTANTIABLE_TARGETS = ("dropout_lab.*", "lightning.Trainer", "lightning.pytorch.loggers.CSVLogger",
                        "lightning.pytorch.loggers.TensorBoardLogger")
#: The run config key that extends :data:`INSTANTIABLE_TARGETS`.
INSTANTIABLE_KEY = "instantiable"
_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(\.\*)?")


def allows(patterns: tuple[str, ...], target: str) -> bool:
    """True if ``target`` is one of ``patterns`` or lies under a ``prefix.*`` pattern."""
    return any(target == p or (p.endswith(".*") and target.startswith(p[:-1])) for p in patterns)


def _targets(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``_target_`` in a config tree, with the key of the node that holds it."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "_target_":
                yield path, value
            else:
                yield from _targets(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _targets(value, f"{path}[{i}]")


def run_whitelist(cfg: DictConfig | Mapping[str, Any]) -> tuple[str, ...]:
    """The execution whitelist of a run: the package's targets plus its ``instantiable`` patterns.

    Raises :class:`InvalidValueError` for a malformed pattern or for a ``_target_`` of the config
    that the whitelist does not allow, naming its key.
    """
    container = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)
    data = cast(dict[str, Any], container)
    extra = data.get(INSTANTIABLE_KEY) or []
    for pattern in extra:
        if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
            raise InvalidValueError(INSTANTIABLE_KEY, list(extra),
                                    "a list of dotted names (mypkg.MyNet) or prefixes (mypkg.*)")
    patterns = INSTANTIABLE_TARGETS + tuple(extra)
    for key, target in _targets({k: v for k, v in data.items() if k != "hydra"}):
        if isinstance(target, str) and "${" not in target and not allows(patterns, target):
            module = target.rsplit(".", 1)[0]
            raise InvalidValueError(f"{key}._target_", target,
                                    f"a target allowed by {INSTANTIABLE_KEY} ({', '.join(patterns)}); "
                                    f"allow yours with {INSTANTIABLE_KEY}=[{module}.*]")
    return patterns
