"""Reply-path accounting: the exit answers an anonymous client only on reply blocks (SURBs) the
client sent ahead, so both ends keep books.

`SurbPool` (the side that cannot address its peer, the exit): the SURBs it holds, bounded; one is
spent per record sent (data, ACK or window update alike). When the pool falls to `low_water` it
asks for enough to refill to `target` (a SURB_REQUEST frame), at most once per `request_gap_s`,
so it asks before it runs dry, not after; a full pool refuses extra SURBs (counted) rather than
grow. (The session asks only while a stream is open or it has something to send.)

`SurbSupply` (the client): how many SURBs the exit holds by its reckoning (sent, less those lost
and those its replies spent), the request it still owes, and how many to send now. It sends
`initial` with the session's first records, tops up when a request comes, and, while a stream is
open, keeps the exit at `target` when replies flow (each reply consumed one).

Costs, per reply: a SURB is 552 bytes; a forward record carries one (its frame adds 4), so about
0.9 forward bytes per reply byte when every reply record is full. The design keeps the forward
side cheap by (1) riding SURBs in cover slots the client sends anyway (the wire does not change,
so those bytes are free), (2) batching ACKs on the exit (one ACK record spends a SURB; ACKs go
every 8 packets or 100 ms, and piggyback on data), and (3) bounding the pool so SURBs do not
expire unused in large numbers when a session goes quiet (a SURB dies with its mixes' key epoch).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Encoded SURB size of the default mix format (first hop 16 + seed 32 + header 504).
SURB_BYTES = 552
#: SURBs a client sends an exit that went quiet mid-stream: one for a reply, one for its request.
SILENCE_SURBS = 2


@dataclass(frozen=True, slots=True)
class SurbPolicy:
    """How many SURBs an exit holds for one session, and when it gets more.

    Every SURB an exit holds costs it about 600 bytes (552 and the object), and an exit must hold
    100,000 idle sessions in 2 GiB, so the supply follows the streams rather than the session:

    - `initial` (8, was 24): what the client sends before it needs more. An exit spends these
      on ACKs of the client's first records (one ACK per 8 records or 100 ms: 1 to 5 of them on
      3-hop paths of 50 to 200 ms per hop, in the simulator) and keeps one back for a CLOSE or a
      request (`SURB_RESERVE`); 6 would leave it at that reserve on slow paths. An idle session
      that never opened a stream holds at most these: 4.7 KB instead of 14 KB.
    - `low_water` (16) and `target` (48), unchanged: while a stream is open the client tops the
      exit up to `target` whenever its holding falls to `low_water`, and the exit asks for as
      much when it falls there with a reply waiting. So the first stream raises the supply to 48
      at once (8 <= 16), as the exit's first request used to (it asked as soon as the first
      SURBs trickled in, leaving even an unused session with 51 to 63 in the simulator), and a
      busy session is fed as before. A session with no stream asks for nothing and is topped up by nothing.
    - `capacity` (64): the most a client can make an exit hold.

    Measured in the simulator against 24 (3 hops of 50 ms, 30 seeds; docs/stream.md, "Reply
    paths: SURB accounting"): responses and echoes of 12 KB and 200 KB as fast or faster at 0% and
    5% loss and under bursts of loss; uploads as fast, except under bursts (about 5% slower on
    average: the first stream's top-up sends SURBs an upload does not need).
    """

    capacity: int = 64  # SURBs the exit holds at most, per session
    low_water: int = 16  # ask for more at or below this (while a stream is open)
    target: int = 48  # ask for enough to reach this
    initial: int = 8  # the client sends this many with its first records
    request_gap_s: float = 0.5  # at most one request per this long

    def __post_init__(self) -> None:
        if not 0 <= self.low_water < self.target <= self.capacity:
            raise ValueError(f"SURB policy needs 0 <= low_water < target <= capacity, got {self}")


class SurbPool:
    """The exit's SURBs for one session."""

    __slots__ = ("policy", "_surbs", "_last_request", "received", "spent", "refused", "requested")

    def __init__(self, policy: SurbPolicy = SurbPolicy()) -> None:
        self.policy = policy
        self._surbs: list[bytes] = []  # oldest first (a list: at most `capacity`; a deque costs ~700 B empty)
        self._last_request = -float("inf")
        self.received = self.spent = self.refused = self.requested = 0

    def __len__(self) -> int:
        return len(self._surbs)

    def add(self, surbs: tuple[bytes, ...]) -> None:
        room = self.policy.capacity - len(self._surbs)
        self._surbs.extend(surbs[:room])
        self.received += min(len(surbs), max(room, 0))
        self.refused += max(0, len(surbs) - max(room, 0))

    def take(self) -> bytes | None:
        """One SURB for the next record, or None (the reply waits for the client)."""
        if not self._surbs:
            return None
        self.spent += 1
        return self._surbs.pop(0)

    def request(self, now: float) -> int:
        """How many SURBs to ask for now (0: none): when at or below low water, once per gap."""
        if len(self._surbs) > self.policy.low_water or now - self._last_request < self.policy.request_gap_s:
            return 0
        self._last_request = now
        count = self.policy.target - len(self._surbs)
        self.requested += count
        return count


class SurbSupply:
    """The client's reckoning of the exit's pool.

    `held_by_exit` is a running estimate: SURBs sent raise it, SURBs in records declared lost
    and SURBs the exit is known to have spent lower it, and a probe resets it. Erring low only
    costs SURBs the exit refuses or holds a little longer; erring high can leave an exit with
    none, unable to answer or ask, while the client believes it supplied.
    """

    __slots__ = ("policy", "sent", "lost", "replies", "owed", "_held", "_started")

    def __init__(self, policy: SurbPolicy = SurbPolicy()) -> None:
        self.policy = policy
        self.sent = 0  # SURBs handed to the session to send
        self.lost = 0  # in records declared lost (they may have arrived: then the exit asks less)
        self.replies = 0  # SURBs the exit is known to have spent: its records, received or not (see on_reply)
        self.owed = 0  # requested by the exit and not yet sent
        self._held = 0
        self._started = False

    @property
    def held_by_exit(self) -> int:
        """SURBs the exit should still hold: sent, minus those in records declared lost, minus
        those spent on replies. Counting lost ones as gone matters: an exit with no SURB cannot
        even ask for more, so the client must notice by itself."""
        return self._held

    def on_lost(self, count: int) -> None:
        self.lost += count
        self._held = max(0, self._held - count)

    def on_probe(self) -> None:
        """The session probes: the exit acknowledged nothing for two loss timeouts. It may be dry,
        its last replies lost on the way back where no count can see them (a burst of loss on the
        reply path), and then it can neither answer nor ask. Count it as holding none, so that
        the probe carries a top-up to `target`; if it did hold some, it asks less later or
        refuses the excess (its capacity)."""
        self._held = 0

    def on_silence(self) -> None:
        """The exit went quiet in the middle of a stream (see `Session._reply_silence_at`): send
        it `SILENCE_SURBS`, enough for a record and a SURB_REQUEST if it has none left. Few, since
        it usually just had nothing to say; if they are lost too, the probe that follows tops up."""
        self.owed = max(self.owed, SILENCE_SURBS)

    def on_request(self, count: int) -> None:
        self.owed = max(self.owed, count)

    def on_reply(self, pn: int | None = None) -> None:
        """A record from the exit arrived, with its packet number `pn` if known. The exit spends
        one SURB per record and numbers its records from 0, so it has spent at least `pn + 1`:
        replies lost on the way back count as spent too. Counting only the records received
        would let backward loss inflate `held_by_exit` until the client stopped topping up an
        exit that had none left, and could not ask (a deadlock until the idle timeout)."""
        spent = self.replies + 1 if pn is None else max(self.replies, pn + 1)
        self._held = max(0, self._held - (spent - self.replies))
        self.replies = spent

    def wanted(self, streams_open: bool = True) -> int:
        """SURBs to create and send now: `initial` first; then what the exit asked for, and, while
        a stream is open, enough to reach `target` once its holding falls to `low_water`."""
        if not self._started:
            return self.policy.initial
        held = self.held_by_exit
        topping = self.policy.target - held if streams_open and held <= self.policy.low_water else 0
        return max(self.owed, topping)

    def on_sent(self, count: int) -> None:
        self._started = True
        self.sent += count
        self._held += count
        self.owed = max(0, self.owed - count)
