"""Loss recovery for mix paths, sans-I/O: the delay estimator, the sender's loss detector and
probe timer, and (in `nyx.stream.acks`) the receiver's ACK tracker.

Mix paths are not QUIC paths. Each of the ~6 hops of a round trip holds a packet for an
exponential delay, so nearly every packet is overtaken by a later one: reordering is the normal
case and says nothing about loss. Loss is therefore declared by TIME only: a packet is lost when
it has gone unacknowledged for longer than the tail (a high quantile, default 0.99) of the
observed time-to-acknowledgement distribution, plus the peer's ACK batching delay, plus a margin
that false losses raise. There is no packet-number threshold. See docs/stream-recovery.md for the
rules and the measured false-loss rate and detection delay.

Everything here takes `now` (float seconds) from the caller; nothing reads a clock or draws a
random number.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from nyx.stream.acks import AckTracker

__all__ = ["AckResult", "AckTracker", "DelayEstimator", "LossRecovery", "RecoveryError", "SentPacket"]

GRANULARITY_S = 0.001  # timer resolution (uvloop's loop.time() has 1 ms); the smallest margin


#: Until min_samples samples, the tail is at least this many smoothed RTTs: a mix path's 99th
#: percentile sits near 2.2 means (Erlang-6), and the first samples are few and fast-biased.
WARMUP_TAIL_FACTOR = 3.0


class RecoveryError(ValueError):
    """The peer's ACK is a protocol violation (it names a packet never sent, or a malformed range).
    The session should close with a protocol-violation code; the message says what was wrong."""


@dataclass(slots=True)
class SentPacket:
    """One sealed record handed to the mixnet, as the sender remembers it."""

    pn: int
    sent_at: float
    size: int  # bytes on the wire (record size), for accounting
    ack_eliciting: bool
    frames: tuple[object, ...]  # what to re-queue if it is lost (opaque here)
    acked: bool = False
    lost: bool = False  # declared lost (stays True if a late ACK proves it spurious)
    lost_at: float | None = None  # when it was declared lost


@dataclass(frozen=True, slots=True)
class AckResult:
    """What one ACK changed: packets newly acknowledged and packets now declared lost."""

    acked: list[SentPacket]  # newly acknowledged, ascending pn
    lost: list[SentPacket]  # declared lost now (by time, with the estimates this ACK updated)
    rtt_sample_s: float | None  # adjusted sample of the largest newly acked ack-eliciting packet
    late: tuple[SentPacket, ...] = ()  # declared lost before and acknowledged now (spurious losses)


class DelayEstimator:
    """Round-trip delay of one path: RFC 9002's min, smoothed mean and variance, plus the tail.

    Loss is declared from the tail, so the estimator keeps the last `window` adjusted samples
    (a ring, and the same samples sorted, so a quantile costs no sort) and reports their
    `quantile` by linear interpolation. The mean and variance alone cannot place a 99th
    percentile: an Erlang-6 path and a one-hop exponential path with the same mean differ by
    2x there.

    Sample rule (the floor): a sample is `rtt - ack_delay`, but never below `min_rtt`, the
    smallest raw (unadjusted) RTT seen. RFC 9002 skips the subtraction when it would cross
    `min_rtt`; we clamp instead, because the recovery feeds one sample per acknowledged packet
    and the ACK's delay field is exact only for the ACK's largest packet (see `LossRecovery`).

    The margin: `loss_timeout_s` adds `margin * tail` on top of the tail. Each spurious loss (a
    packet declared lost and acknowledged later) raises the margin by `spurious_step`, up to
    `max_margin`; each sample lowers it by `spurious_step * target / (1 - target)`, down to
    `base_margin`. The margin therefore settles where false losses run at about
    `target_false_loss` of acknowledged packets, whatever the distribution's shape.
    """

    __slots__ = (
        "initial_rtt_s", "quantile", "window", "min_samples", "base_margin", "max_margin",
        "spurious_step", "_margin_decay", "margin", "samples_total", "_min_rtt_s", "_smoothed_rtt_s",
        "_rttvar_s", "_ring", "_ring_next", "_sorted", "_tail_cache",
    )

    def __init__(
        self,
        initial_rtt_s: float = 1.0,
        quantile: float = 0.99,
        *,
        window: int = 256,
        min_samples: int = 64,
        base_margin: float = 0.125,
        max_margin: float = 2.0,
        spurious_step: float = 0.25,
        target_false_loss: float = 0.005,
    ) -> None:
        if not initial_rtt_s > 0:
            raise ValueError(f"initial_rtt_s must be positive, got {initial_rtt_s}")
        if not 0.5 <= quantile < 1.0:
            raise ValueError(f"quantile must be in [0.5, 1), got {quantile}")
        if window < 2 or not 1 <= min_samples <= window:
            raise ValueError(f"need window >= 2 and 1 <= min_samples <= window, got {window}, {min_samples}")
        if not 0 < target_false_loss < 1:
            raise ValueError(f"target_false_loss must be in (0, 1), got {target_false_loss}")
        self.initial_rtt_s = initial_rtt_s
        self.quantile = quantile
        self.window = window
        self.min_samples = min_samples
        self.base_margin = base_margin
        self.max_margin = max_margin
        self.spurious_step = spurious_step
        self._margin_decay = spurious_step * target_false_loss / (1.0 - target_false_loss)
        self.margin = base_margin
        self.samples_total = 0
        self._min_rtt_s = math.inf
        self._smoothed_rtt_s = initial_rtt_s
        self._rttvar_s = initial_rtt_s / 2
        # The last `window` samples as a ring over a list (a deque costs ~700 bytes even empty):
        # appended until full, then overwritten at `_ring_next`, the oldest.
        self._ring: list[float] = []
        self._ring_next = 0
        self._sorted: list[float] = []
        self._tail_cache: float | None = None

    @property
    def min_rtt_s(self) -> float:
        """Smallest raw RTT seen (`initial_rtt_s` before any sample)."""
        return self.initial_rtt_s if math.isinf(self._min_rtt_s) else self._min_rtt_s

    @property
    def smoothed_rtt_s(self) -> float:
        return self._smoothed_rtt_s

    @property
    def rttvar_s(self) -> float:
        return self._rttvar_s

    def quantile_of(self, q: float) -> float | None:
        """The `q` quantile of the samples held (None before any): for telemetry, not for timers."""
        held = self._sorted
        if not held:
            return None
        return held[min(len(held) - 1, int(q * len(held)))]

    @property
    def samples_held(self) -> int:
        """Samples the tail is computed from (at most `window`: the memory bound)."""
        return len(self._ring)

    def on_sample(self, rtt_s: float, ack_delay_s: float = 0.0) -> float:
        """Add one RTT sample (send to ACK arrival) and the peer's reported delay for it; returns
        the adjusted sample that entered the estimates."""
        if not (rtt_s >= 0 and math.isfinite(rtt_s)):
            raise ValueError(f"an RTT sample must be finite and >= 0, got {rtt_s}")
        ack_delay_s = max(0.0, ack_delay_s) if math.isfinite(ack_delay_s) else 0.0
        first = self.samples_total == 0
        self._min_rtt_s = min(self._min_rtt_s, rtt_s)
        adjusted = max(self._min_rtt_s, rtt_s - ack_delay_s)
        if first:
            self._smoothed_rtt_s, self._rttvar_s = adjusted, adjusted / 2
        else:
            self._rttvar_s = 0.75 * self._rttvar_s + 0.25 * abs(self._smoothed_rtt_s - adjusted)
            self._smoothed_rtt_s = 0.875 * self._smoothed_rtt_s + 0.125 * adjusted
        ring = self._ring
        if len(ring) == self.window:
            slot = self._ring_next
            del self._sorted[bisect_left(self._sorted, ring[slot])]
            ring[slot] = adjusted
            self._ring_next = (slot + 1) % self.window
        else:
            ring.append(adjusted)
        insort(self._sorted, adjusted)
        self._tail_cache = None
        self.samples_total += 1
        self.margin = max(self.base_margin, self.margin - self._margin_decay)
        return adjusted

    def on_spurious_loss(self) -> None:
        """A packet declared lost was acknowledged after all: widen the margin (see the class)."""
        self.margin = min(self.max_margin, self.margin + self.spurious_step)

    def tail_s(self) -> float:
        """The `quantile` of recent adjusted samples. Before any sample: 3 x initial_rtt_s (RFC
        9002's first PTO). With fewer than `min_samples`, the larger of the empirical quantile
        and smoothed + 4 * rttvar, because a 99th percentile of a few samples is just their max."""
        if self._tail_cache is None:
            n = len(self._sorted)
            if n == 0:
                self._tail_cache = 3 * self.initial_rtt_s
            else:
                position = self.quantile * (n - 1)
                low = int(position)
                high = min(low + 1, n - 1)
                s = self._sorted
                tail = s[low] + (position - low) * (s[high] - s[low])
                if n < self.min_samples:
                    tail = max(tail, self._smoothed_rtt_s + 4 * self._rttvar_s, WARMUP_TAIL_FACTOR * self._smoothed_rtt_s)
                self._tail_cache = tail
        return self._tail_cache

    def loss_timeout_s(self, max_ack_delay_s: float) -> float:
        """How long an unacknowledged packet waits before it is declared lost:
        tail * (1 + margin) + max_ack_delay_s, the margin at least 1 ms.

        The tail covers the path (samples have the ACK delay taken out); `max_ack_delay_s` puts
        back the most the peer may hold an ACK; the margin absorbs the quantile's sampling noise
        and drift and is tuned by false losses. Erring long costs a lost packet latency (one
        more margin); erring short costs a retransmission through the mixnet and a cover slot.
        """
        tail = self.tail_s()
        return tail + max(GRANULARITY_S, self.margin * tail) + max_ack_delay_s


def _merge(ranges: Sequence[tuple[int, int]], largest_sent: int) -> list[tuple[int, int]]:
    """Validate ACK ranges against what was sent; return them ascending and merged."""
    spans = []
    for item in ranges:
        try:
            low, high = item
        except (TypeError, ValueError):
            raise RecoveryError(f"ACK range {item!r} is not a (low, high) pair") from None
        if not (isinstance(low, int) and isinstance(high, int)) or not 0 <= low <= high:
            raise RecoveryError(f"ACK range ({low!r}, {high!r}) is malformed (need 0 <= low <= high)")
        if high > largest_sent:
            raise RecoveryError(
                f"peer acknowledged packet {high}, but the largest packet sent is {largest_sent}"
            )
        spans.append((low, high))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for low, high in spans:
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _take(packets: dict[int, SentPacket], spans: list[tuple[int, int]]) -> list[SentPacket]:
    """Remove and return (ascending) the packets whose pn lies in `spans` (ascending, merged),
    walking whichever is shorter: the ranges' pns or the tracked packets."""
    if not packets or not spans:
        return []
    if sum(high - low + 1 for low, high in spans) <= len(packets):
        pns = [pn for low, high in spans for pn in range(low, high + 1) if pn in packets]
    else:
        lows = [low for low, _ in spans]
        pns = []
        for pn in packets:
            i = bisect_right(lows, pn) - 1
            if i >= 0 and pn <= spans[i][1]:
                pns.append(pn)
    return [packets.pop(pn) for pn in pns]


class LossRecovery:
    """The sender side of one session: sent packets, ACK processing, loss by time, probes.

    Rules (why: docs/stream-recovery.md):

    - Loss: an ack-eliciting packet is lost once `now >= sent_at + timeout`, with `timeout` the
      estimator's `loss_timeout_s(max_ack_delay_s)` backed off by `2 ** (pto_count - 1)` once
      two probes have gone unanswered (capped at `max_backoff_s`). Nothing else declares loss:
      a later packet being acknowledged first is what mix paths do every time.
    - RTT samples: every newly acknowledged ack-eliciting packet gives one, `now - sent_at` with
      the ACK's delay (capped at `max_ack_delay_s`, as RFC 9002 does) taken out. Sampling only
      the ACK's largest packet, as RFC 9002 does, would sample the packets that overtook the
      others, a fast-biased subset, and the tail would come out short.
    - Spurious loss: a packet declared lost is remembered for two more timeouts; an ACK of
      it then counts in `spurious_lost_total`, widens the estimator's margin, and gives the tail
      a sample censored at the loss timeout (it says "at least T", not its raw value: an ACK
      that late is most often a lost ACK repeated after a silence, e.g. a failed mix, and 8
      raw samples of 2.4 s in a window of 256 would triple the timeout for the next 256
      packets). It is not reported as acked: its frames were already re-queued.
    - Probe: with ack-eliciting packets in flight and nothing newly acknowledged for
      `2 * timeout * 2 ** pto_count` (capped at `max_backoff_s`), `probe_due` says once to
      send one ack-eliciting packet (a PING, which also carries fresh reply blocks to an exit
      whose pool may be dry) and increments `pto_count`. The clock starts at the last progress
      (a newly acknowledged packet), the last probe, or a send after an idle spell (nothing in
      flight and no loss since the last progress), so a path that swallows everything,
      retransmissions included, is probed and backed off rather than flooded. The first probe
      leaves the loss timeout alone (a failed mix's burst is silence of about one timeout; its
      losses should not wait twice as long); from the second on, losses back off with it. Any
      newly acknowledged packet resets `pto_count`.
    - Persistent loss: `persistent_after` ack-eliciting packets declared lost with no packet
      sent after them acknowledged: the route is likely broken (a failed mix); the session
      should replace it.
    """

    __slots__ = (
        "estimator", "max_ack_delay_s", "max_in_flight", "persistent_after", "max_backoff_s",
        "largest_sent", "largest_acked", "pto_count", "acked_total", "lost_total",
        "spurious_lost_total", "probes_total", "_in_flight", "_quiet", "_lost", "_in_flight_bytes",
        "_last_sent_at", "_probe_anchor", "_lost_since_progress", "_lost_unanswered",
    )

    def __init__(
        self,
        estimator: DelayEstimator | None = None,
        *,
        max_ack_delay_s: float = 0.1,
        max_in_flight: int = 256,
        persistent_after: int = 8,
        max_backoff_s: float = 60.0,
    ) -> None:
        if max_ack_delay_s < 0 or max_in_flight < 1 or persistent_after < 1 or max_backoff_s <= 0:
            raise ValueError("need max_ack_delay_s >= 0, max_in_flight >= 1, persistent_after >= 1, max_backoff_s > 0")
        self.estimator = estimator if estimator is not None else DelayEstimator()
        self.max_ack_delay_s = max_ack_delay_s
        self.max_in_flight = max_in_flight
        self.persistent_after = persistent_after
        self.max_backoff_s = max_backoff_s
        self.largest_sent: int | None = None
        self.largest_acked: int | None = None
        self.pto_count = 0
        self.acked_total = 0
        self.lost_total = 0
        self.spurious_lost_total = 0
        self.probes_total = 0
        self._in_flight: OrderedDict[int, SentPacket] = OrderedDict()  # ack-eliciting, by pn = by sent_at
        self._quiet: OrderedDict[int, SentPacket] = OrderedDict()  # not ack-eliciting: never lost, forgotten
        self._lost: OrderedDict[int, SentPacket] = OrderedDict()  # declared lost, kept to spot late ACKs
        self._in_flight_bytes = 0
        self._last_sent_at = -math.inf
        self._probe_anchor: float | None = None
        self._lost_since_progress = 0
        # The last `persistent_after` lost pns not yet answered (a list: a deque costs ~700 bytes).
        self._lost_unanswered: list[int] = []

    @property
    def in_flight(self) -> int:
        """Ack-eliciting packets neither acknowledged nor declared lost."""
        return len(self._in_flight)

    @property
    def in_flight_bytes(self) -> int:
        return self._in_flight_bytes

    def can_send(self) -> bool:
        """Room for one more ack-eliciting packet (a due probe is sent regardless)."""
        return len(self._in_flight) < self.max_in_flight

    @property
    def persistent_loss(self) -> bool:
        """True when `persistent_after` packets were lost with nothing sent after them acked."""
        return len(self._lost_unanswered) >= self.persistent_after

    def loss_timeout_s(self) -> float:
        """The current loss timeout, backoff included."""
        return self._backed_off(self.estimator.loss_timeout_s(self.max_ack_delay_s), self.pto_count - 1)

    def _backed_off(self, interval_s: float, doublings: int) -> float:
        factor = 1 << min(max(doublings, 0), 32)
        return min(interval_s * factor, max(interval_s, self.max_backoff_s))

    def _probe_at(self) -> float | None:
        if not self._in_flight or self._probe_anchor is None:
            return None
        base = 2 * self.estimator.loss_timeout_s(self.max_ack_delay_s)
        return self._probe_anchor + self._backed_off(base, self.pto_count)

    def on_packet_sent(self, packet: SentPacket) -> None:
        """Track a packet just sealed and sent. pns must strictly increase and times not go back."""
        if packet.pn < 0 or (self.largest_sent is not None and packet.pn <= self.largest_sent):
            raise ValueError(f"packet numbers must strictly increase: {packet.pn} after {self.largest_sent}")
        if packet.sent_at < self._last_sent_at:
            raise ValueError(f"send times must not go back: {packet.sent_at} after {self._last_sent_at}")
        self.largest_sent = packet.pn
        self._last_sent_at = packet.sent_at
        if not packet.ack_eliciting:
            self._quiet[packet.pn] = packet
            if len(self._quiet) > self.max_in_flight:
                self._quiet.popitem(last=False)
            return
        if self._probe_anchor is None or (not self._in_flight and self._lost_since_progress == 0):
            self._probe_anchor = max(packet.sent_at, self._probe_anchor or -math.inf)
        self._in_flight[packet.pn] = packet
        self._in_flight_bytes += packet.size

    def on_ack(self, ranges: Sequence[tuple[int, int]], ack_delay_s: float, now: float) -> AckResult:
        """Process one ACK frame: inclusive (low, high) ranges and the peer's delay in seconds.
        Raises RecoveryError for a range naming a packet never sent or a malformed range."""
        spans = _merge(ranges, -1 if self.largest_sent is None else self.largest_sent)
        acked = _take(self._in_flight, spans)
        quiet = _take(self._quiet, spans)
        late = _take(self._lost, spans)
        ack_delay_s = min(max(0.0, ack_delay_s), self.max_ack_delay_s) if math.isfinite(ack_delay_s) else 0.0
        sample: float | None = None
        censor_s = self.estimator.loss_timeout_s(self.max_ack_delay_s) + ack_delay_s
        for packet in sorted(acked + late, key=lambda p: p.pn):
            rtt_s = max(0.0, now - packet.sent_at)
            adjusted = self.estimator.on_sample(min(rtt_s, censor_s) if packet.lost else rtt_s, ack_delay_s)
            if not packet.lost:
                sample = adjusted
        for packet in acked:
            packet.acked = True
            self._in_flight_bytes -= packet.size
        for packet in quiet:
            packet.acked = True
        for packet in late:
            packet.acked = True
            self.spurious_lost_total += 1
            self.estimator.on_spurious_loss()
        self.acked_total += len(acked)
        if acked or late:
            self.pto_count = 0
            self._probe_anchor = now
            self._lost_since_progress = 0
        if spans:  # the path delivered the ACK's largest pn: losses before it are not persistent
            unanswered, largest = self._lost_unanswered, spans[-1][1]
            answered = 0
            while answered < len(unanswered) and unanswered[answered] <= largest:
                answered += 1
            del unanswered[:answered]
        newly = sorted(acked + quiet, key=lambda p: p.pn)
        if newly and (self.largest_acked is None or newly[-1].pn > self.largest_acked):
            self.largest_acked = newly[-1].pn
        return AckResult(acked=newly, lost=self._detect_lost(now), rtt_sample_s=sample, late=tuple(late))

    def on_timeout(self, now: float) -> list[SentPacket]:
        """Packets whose loss timeout has passed, ascending pn (empty if none)."""
        return self._detect_lost(now)

    def give_up(self, pns: Sequence[int], now: float) -> list[SentPacket]:
        """Stop waiting for these packets (their route failed): they leave the in-flight set now,
        so their frames can be resent at once. Not a loss by time: the estimator's margin and the
        persistent-loss count are untouched, and a late ACK for them is ignored."""
        given = []
        for pn in pns:
            packet = self._in_flight.pop(pn, None)
            if packet is None:
                continue
            self._in_flight_bytes -= packet.size
            packet.lost, packet.lost_at = True, now
            given.append(packet)
        return given

    def probe_due(self, now: float) -> bool:
        """True, once per probe interval, when the caller must send one ack-eliciting packet
        (a PING if there is nothing else) even if `can_send()` is False. A True return counts
        the probe and doubles the backoff; call it after `on_ack`/`on_timeout` at each wake-up."""
        probe_at = self._probe_at()
        if probe_at is None or now < probe_at:
            return False
        self.pto_count += 1
        self.probes_total += 1
        self._probe_anchor = now
        return True

    def deadline(self) -> float | None:
        """When `on_timeout` or `probe_due` next has work; None with nothing in flight."""
        if not self._in_flight:
            return None
        oldest = next(iter(self._in_flight.values()))
        loss_at = oldest.sent_at + self.loss_timeout_s()
        probe_at = self._probe_at()
        return loss_at if probe_at is None else min(loss_at, probe_at)

    def _detect_lost(self, now: float) -> list[SentPacket]:
        timeout = self.loss_timeout_s()
        lost = []
        while self._in_flight:
            pn, packet = next(iter(self._in_flight.items()))
            if now < packet.sent_at + timeout:
                break
            del self._in_flight[pn]
            self._in_flight_bytes -= packet.size
            packet.lost, packet.lost_at = True, now
            self._lost[pn] = packet
            lost.append(packet)
            if self.largest_acked is None or pn > self.largest_acked:
                self._lost_unanswered.append(pn)
                if len(self._lost_unanswered) > self.persistent_after:
                    del self._lost_unanswered[0]
        self.lost_total += len(lost)
        self._lost_since_progress += len(lost)
        # Forget what can no longer teach anything: lost packets two timeouts after their
        # declaration (an ACK later than that is ignored), non-eliciting ones after one timeout.
        while self._lost and (
            len(self._lost) > self.max_in_flight or next(iter(self._lost.values())).lost_at + 2 * timeout <= now
        ):
            self._lost.popitem(last=False)
        while self._quiet and next(iter(self._quiet.values())).sent_at + timeout <= now:
            self._quiet.popitem(last=False)
        return lost
