"""The one error type of the FEC layer.

A ValueError subclass, because every FEC failure is bad input from the caller or the network
(too few shards, a shard of the wrong size, an index outside the block); callers that already
handle ValueError from parsers keep working, and callers that care can catch FecError alone.
"""

from __future__ import annotations


class FecError(ValueError):
    """A block cannot be encoded or decoded as given; the message says which shard and why."""
