"""The handlers of every command kind, registered as their modules are imported."""

from workers.handlers import holds, lines, warehouse_in
from workers.handlers.registry import HANDLERS, apply, handles, park, parks

__all__ = ["HANDLERS", "apply", "handles", "holds", "lines", "park", "parks", "warehouse_in"]
