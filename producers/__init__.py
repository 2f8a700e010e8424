"""Producers: the Python client (and, later, the HTTP API) that record commands and ring shards."""

from domain.results import HoldResult, MovementView, StockView
from producers.client import CommandTicket, HoldTicket, StockClient

__all__ = ["CommandTicket", "HoldResult", "HoldTicket", "MovementView", "StockClient", "StockView"]
