"""The registry of fetch strategies: names to :class:`FetchStrategy` objects.

Built-in strategies register when :mod:`ps1dask.fetch.strategies` is imported; installed
packages can add theirs through the ``ps1dask.strategies`` entry-point group (loaded on first
use), and code can call :func:`register_strategy` directly.
"""

from __future__ import annotations

import threading
import warnings
from importlib.metadata import entry_points

from ps1dask.exceptions import InvalidParameterError, StrategyPluginWarning, UnknownStrategyError
from ps1dask.fetch.strategies.base import FetchStrategy

#: Not a strategy: the cost model's choice among the strategies with ``in_auto``, per group.
AUTO = "auto"
#: Entry-point group of strategies from installed packages (a class or an instance each).
ENTRY_POINT_GROUP = "ps1dask.strategies"

_REGISTRY: dict[str, FetchStrategy] = {}
_LOCK = threading.Lock()
_entry_points_loaded = False


def register_strategy(
    strategy: FetchStrategy | type[FetchStrategy], *, replace: bool = False
) -> FetchStrategy:
    """Make a strategy available by its ``name`` everywhere; returns the registered instance.

    ``strategy`` is a :class:`FetchStrategy` subclass (instantiated without arguments) or an
    instance. A name already registered is refused unless ``replace=True``.
    """
    instance = strategy() if isinstance(strategy, type) else strategy
    if not isinstance(instance, FetchStrategy):
        raise InvalidParameterError(f"{strategy!r} is not a ps1dask FetchStrategy")
    name = getattr(instance, "name", None)
    if not isinstance(name, str) or not name or name == AUTO or name != name.strip():
        raise InvalidParameterError(
            f"{strategy!r}: a strategy needs a non-empty name other than {AUTO!r}"
        )
    with _LOCK:
        if name in _REGISTRY and not replace:
            raise InvalidParameterError(
                f"a fetch strategy named {name!r} is already registered ({_REGISTRY[name]!r}); "
                "pass replace=True to replace it"
            )
        _REGISTRY[name] = instance
    return instance


def unregister_strategy(name: str) -> None:
    """Remove a registered strategy (for tests and plug-ins that switch strategies)."""
    with _LOCK:
        if name not in _REGISTRY:
            raise UnknownStrategyError(_unknown(name))
        del _REGISTRY[name]


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register_strategy(point.load())
        except Exception as err:  # noqa: BLE001 - a broken plug-in must not break every job
            warnings.warn(
                f"fetch strategy {point.name!r} from {point.value!r} not loaded: "
                f"{type(err).__name__}: {err}",
                StrategyPluginWarning,
                stacklevel=2,
            )


def _unknown(name: object) -> str:
    return f"unknown fetch strategy {name!r}: choose one of {', '.join(strategy_choices())}"


def strategy_names() -> tuple[str, ...]:
    """Names of the registered strategies, in registration order (``auto`` excluded)."""
    _load_entry_points()
    with _LOCK:
        return tuple(_REGISTRY)


def strategy_choices() -> tuple[str, ...]:
    """What ``strategy=`` / ``--strategy`` accepts: ``auto`` and every registered name."""
    return (AUTO, *strategy_names())


def strategy_help() -> str:
    """One sentence per choice, for the CLI's ``--strategy`` help."""
    parts = [f"{s.name}: {s.summary or s.name}" for s in map(get_strategy, strategy_names())]
    parts.append(f"{AUTO}: a cost model per skycell (default)")
    return "how to fetch. " + "; ".join(parts) + ". All give the same pixels."


def get_strategy(name: str) -> FetchStrategy:
    """The registered strategy ``name``; :class:`UnknownStrategyError` for any other name."""
    _load_entry_points()
    with _LOCK:
        found = _REGISTRY.get(name) if isinstance(name, str) else None
    if found is None:
        raise UnknownStrategyError(_unknown(name))
    return found


def auto_candidates() -> tuple[FetchStrategy, ...]:
    """The registered strategies ``auto`` chooses among."""
    _load_entry_points()
    with _LOCK:
        return tuple(s for s in _REGISTRY.values() if s.in_auto)


def strategies_for(name: str) -> dict[str, FetchStrategy]:
    """The strategies a job run with ``strategy=name`` may use, by name: the one named, or
    for ``auto`` every candidate. Raises :class:`UnknownStrategyError` for unknown names."""
    if name == AUTO:
        return {s.name: s for s in auto_candidates()}
    return {name: get_strategy(name)}


def job_strategies(name: str) -> dict[str, FetchStrategy]:
    """:func:`strategies_for` as a job starting now uses them: each configured for the job
    (:meth:`FetchStrategy.for_job`, e.g. the ``s3`` source probed), ``auto`` candidates
    that cannot take part left out. Call it once per job, in the client process."""
    named = name != AUTO
    out = {}
    for key, strategy in strategies_for(name).items():
        configured = strategy.for_job(named=named)
        if configured is not None:
            out[key] = configured
    return out
