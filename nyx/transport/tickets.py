"""TLS 1.3 session tickets for QUIC resumption: the server's store and the client's cache.

Resumption skips the certificate exchange: a reconnecting peer proves it holds the secret of an
earlier, fully authenticated connection. The SCL load models assume it ("session tickets
ready"), and it halves the handshake work of a gateway whose clients come back.

- Pinning stays sound: a client only ever resumes with a ticket it received over a connection
  whose certificate matched the directory's fingerprint, and tickets are filed under that
  fingerprint, so a directory change (new certificate) forces a full, pinned handshake.
- Both sides use a ticket once (the server pops it, the client takes it), so a captured
  ClientHello cannot be replayed into a second resumed connection; nyx sends no 0-RTT data.
- Both are bounded (oldest first out): a flood of connections cannot grow them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class ServerTicketStore:
    """Tickets this node issued, by ticket label; each may be redeemed once."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("ticket store capacity must be at least 1")
        self.capacity = capacity
        self._tickets: OrderedDict[bytes, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tickets)

    def add(self, ticket: Any) -> None:
        """Remember an issued ticket (the backend's `session_ticket_handler`)."""
        self._tickets[ticket.ticket] = ticket
        self._tickets.move_to_end(ticket.ticket)
        while len(self._tickets) > self.capacity:
            self._tickets.popitem(last=False)

    def pop(self, label: bytes) -> Any | None:
        """The ticket for `label`, removed (the backend's `session_ticket_fetcher`)."""
        return self._tickets.pop(label, None)


class ClientTicketCache:
    """Tickets received from peers, filed by (peer, pinned certificate fingerprint).

    A transport makes its own; pass one cache to several transports (or keep it across a
    restart of one) to let a returning client resume.
    """

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError("ticket cache capacity must be at least 1")
        self.capacity = capacity
        self._tickets: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tickets)

    def store(self, peer: str, fingerprint: str, ticket: Any) -> None:
        key = (peer, fingerprint)
        self._tickets[key] = ticket
        self._tickets.move_to_end(key)
        while len(self._tickets) > self.capacity:
            self._tickets.popitem(last=False)

    def take(self, peer: str, fingerprint: str) -> Any | None:
        """The newest ticket for this peer and certificate, removed; None if there is none."""
        return self._tickets.pop((peer, fingerprint), None)
