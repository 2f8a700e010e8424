"""Tessera: stock management for a tile shop as a message-driven worker system."""

__version__ = "0.1.0"
