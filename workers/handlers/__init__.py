"""The handlers of every command kind, registered as their modules are imported."""

from workers.handlers import counts, holds, lines, returns, transfers, warehouse_in
from workers.handlers.registry import HANDLERS, apply, handles, park, parks

__all__ = [
    "HANDLERS",
    "apply",
    "counts",
    "handles",
    "holds",
    "lines",
    "park",
    "parks",
    "returns",
    "transfers",
    "warehouse_in",
]
