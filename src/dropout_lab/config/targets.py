"""What configs may instantiate: Hydra 1.4's execution whitelist, shared by training and evaluation.

The package's own targets are always allowed. A run adds its own with the config key
``instantiable`` (``instantiable=[mypkg.*]``), so a user's noise technique or network is chosen by
``_target_`` without editing the package; any other target is refused before anything is built.
Targets are checked as ``instantiate`` would see them: interpolations resolved (``_target_=${x}``),
and a ``_target_`` whose interpolation does not resolve is refused too (:func:`check_complete`
checks every value of a run config: set, and its interpolations resolved).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, OmegaConfBaseException

from dropout_lab.errors import DropoutLabError, InvalidValueError

#: Targets every run config may instantiate (``_target_`` of data, model, noise, trainer and logger).
INSTANTIABLE_TARGETS = ("dropout_lab.*", "lightning.Trainer", "lightning.pytorch.loggers.CSVLogger",
                        "lightning.pytorch.loggers.TensorBoardLogger")
#: The run config key that extends :data:`INSTANTIABLE_TARGETS`.
INSTANTIABLE_KEY = "instantiable"
_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(\.\*)?")
_TARGET = "_target_"
#: Top-level keys not searched for targets: Hydra's own config (its launcher and sweeper are Hydra's to build).
_SKIPPED = ("hydra",)

_Node = DictConfig | ListConfig


def allows(patterns: tuple[str, ...], target: str) -> bool:
    """True if ``target`` is one of ``patterns`` or lies under a ``prefix.*`` pattern."""
    return any(target == p or (p.endswith(".*") and target.startswith(p[:-1])) for p in patterns)


def _unresolvable(field: str, raw: Any, exc: Exception) -> InvalidValueError:
    """The error for value ``raw`` of ``field`` whose interpolation failed with ``exc`` (its first line: the reason)."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InvalidValueError(field, raw, f"a value whose interpolations resolve ({reason})")


def _resolved(node: _Node, key: Any, field: str) -> Any:
    """``node[key]`` with interpolations resolved; :class:`InvalidValueError` naming ``field`` if they do not."""
    try:
        return node[key]
    except OmegaConfBaseException as exc:
        raise _unresolvable(field, OmegaConf.to_container(node, resolve=False)[key], exc) from None  # type: ignore[index]


def _keys(node: _Node, path: str = "", seen: frozenset[int] = frozenset()) -> Iterator[tuple[str, _Node, Any]]:
    """Every key of a config tree as (dotted field, node, key), Hydra's own ``hydra`` tree left out.

    Interpolated sub-trees (``noise: ${other}``) are followed where they resolve; values that do
    not resolve or are missing (``???``) hold nothing to follow.
    """
    if id(node) in seen:  # a sub-tree reached again through an interpolation
        return
    seen = seen | {id(node)}
    keys: list[Any] = list(node.keys()) if isinstance(node, DictConfig) else list(range(len(node)))
    for key in keys:
        if not path and key in _SKIPPED:
            continue
        field = f"{path}[{key}]" if isinstance(node, ListConfig) else f"{path}.{key}" if path else str(key)
        yield field, node, key
        try:
            value = node[key]
        except OmegaConfBaseException:
            continue
        if isinstance(value, DictConfig | ListConfig):
            yield from _keys(value, field, seen)


def check_complete(cfg: DictConfig) -> None:
    """Raise :class:`InvalidValueError` naming a key left ``???`` or whose interpolation does not resolve.

    Of a chain (``data.shuffle_seed: ${seed}`` with ``seed=${oc.env:X}``), the key where it breaks is
    named. Call it where Hydra's resolvers work (in a Hydra application): ``${hydra:...}`` resolves only there.
    """
    failed: dict[str, InvalidValueError] = {}
    for field, node, key in _keys(cfg):
        try:
            node[key]
        except MissingMandatoryValue:
            failed[field] = InvalidValueError(field, "???", f"a value (it is mandatory: {field}=VALUE)")
        except InterpolationResolutionError as exc:
            failed[field] = _unresolvable(field, OmegaConf.to_container(node, resolve=False)[key], exc)  # type: ignore[index]
    for field, error in failed.items():
        if not any(f"${{{other}}}" in str(error.value) for other in failed if other != field):
            raise error
    if failed:  # a loop of references: the first
        raise next(iter(failed.values()))


def _patterns(cfg: DictConfig) -> tuple[str, ...]:
    """The run's ``instantiable`` patterns, checked."""
    value = _resolved(cfg, INSTANTIABLE_KEY, INSTANTIABLE_KEY) if INSTANTIABLE_KEY in cfg else None
    extra = OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value or []
    if not isinstance(extra, list) or not all(isinstance(p, str) and _PATTERN.fullmatch(p) for p in extra):
        raise InvalidValueError(INSTANTIABLE_KEY, extra,
                                "a list of dotted names (mypkg.MyNet) or prefixes (mypkg.*)")
    return tuple(extra)


def run_whitelist(cfg: DictConfig | Mapping[str, Any]) -> tuple[str, ...]:
    """The execution whitelist of a run: the package's targets plus its ``instantiable`` patterns.

    Raises :class:`InvalidValueError` for a malformed pattern, or for a ``_target_`` of the config
    (interpolations resolved) that the whitelist does not allow or that does not resolve, naming its key.
    """
    root = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    patterns = INSTANTIABLE_TARGETS + _patterns(root)
    for field, node, key in _keys(root):
        target = _resolved(node, key, field) if key == _TARGET else None
        if isinstance(target, str) and not allows(patterns, target):
            allowed = f"a target allowed by {INSTANTIABLE_KEY} ({', '.join(patterns)})"
            if "." in target and _PATTERN.fullmatch(target):
                allowed += f"; allow yours with {INSTANTIABLE_KEY}=[{target.rsplit('.', 1)[0]}.*]"
            raise InvalidValueError(field, target, allowed)
    return patterns


def build(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """``instantiate(cfg[key], **kwargs)`` under the run's whitelist; a keyword the target does not take
    (``+model.extra=1`` for a net without it) is refused naming the node, not as a traceback."""
    from hydra.utils import execution_whitelist, instantiate

    with execution_whitelist(run_whitelist(cfg)):
        try:
            return instantiate(cfg[key], **kwargs)
        except TypeError as exc:
            raise DropoutLabError(f"{key}: {cfg[key]._target_} cannot be built from this config: {exc}") from None
