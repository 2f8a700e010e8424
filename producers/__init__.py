"""Producers: the Python client (and, later, the HTTP API) that record commands and ring shards."""

from producers.client import CommandTicket, HoldTicket, StockClient
from producers.views import HoldResult, MovementView, StockView

__all__ = ["CommandTicket", "HoldResult", "HoldTicket", "MovementView", "StockClient", "StockView"]
