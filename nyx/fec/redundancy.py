"""Adaptive redundancy: m for the next block from the loss the path has shown.

The law (docs/fec.md gives the reasoning and compares it with the spec's rules):

1. Estimate the shard loss rate p with an EWMA over windows of `window_shards` shards.
2. Judge it pessimistically: use the Wilson upper confidence bound on p for the EWMA's effective
   sample size, so a short or lucky history does not talk m down.
3. Pick the smallest m in [min_m, max_m] whose binomial tail meets the target:
       P[ more than m of the k + m shards lost ] = sum_{j > m} C(k+m, j) p^j (1-p)^(k+m-j) <= target
4. Hysteresis: go up at once (protection is never late); come down one step at a time, and only
   after `hold_blocks` consecutive decisions in which m - 1 would have met target * down_margin.

Shard losses are assumed independent within a block. Mixnet loss is bursty per route, which is
why the stream layer spreads a block's shards over routes; residual loss left after FEC is ARQ's.
Sans-I/O: counts in, a number out; no clock.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

from nyx.fec.codec import MAX_SHARDS
from nyx.fec.errors import FecError


@functools.lru_cache(maxsize=4096)
def block_loss_probability(k: int, m: int, loss_rate: float) -> float:
    """P[more than m of k + m shards lost] when each is lost independently with `loss_rate`.

    Summed from the tail side term by term, so tiny probabilities (1e-12) keep their precision
    rather than vanishing in 1 - CDF. Cached: the estimate moves once per window, not per block.
    """
    n = k + m
    if loss_rate <= 0.0:
        return 0.0
    if loss_rate >= 1.0:
        return 1.0
    q = 1.0 - loss_rate
    return math.fsum(math.comb(n, j) * loss_rate**j * q ** (n - j) for j in range(m + 1, n + 1))


def wilson_upper_bound(rate: float, samples: float, z: float) -> float:
    """The upper end of the Wilson score interval: a loss rate the data cannot rule out."""
    if samples <= 0:
        return 1.0
    z2 = z * z
    centre = rate + z2 / (2 * samples)
    spread = z * math.sqrt(rate * (1 - rate) / samples + z2 / (4 * samples * samples))
    return min(1.0, (centre + spread) / (1 + z2 / samples))


@dataclass(frozen=True, slots=True)
class RedundancyDecision:
    """What the controller chose and why: m, the loss rate planned for, the predicted residual.

    `meets_target` is False when even max_m cannot hold the target at the planned loss rate: the
    path is too lossy for FEC alone and the caller should expect ARQ (or pick another route).
    """

    m: int
    planned_loss_rate: float
    predicted_block_loss: float
    meets_target: bool


class RedundancyController:
    """Chooses m per block so P[block unrecoverable] stays under `target_block_loss`.

    `observe(sent, lost)` after each block's shards are accounted for (acknowledged or timed out);
    `m` is the parity count for the next block. `prior_loss_rate` and `prior_shards` seed the
    estimate so the first blocks are protected before anything has been measured.
    """

    def __init__(
        self,
        k: int,
        *,
        target_block_loss: float = 1e-4,
        min_m: int = 1,
        max_m: int | None = None,
        window_shards: int = 256,
        ewma_weight: float = 0.2,
        confidence_z: float = 2.0,
        down_margin: float = 0.25,
        hold_blocks: int = 64,
        prior_loss_rate: float = 0.05,
        prior_shards: float = 256.0,
    ) -> None:
        if not 1 <= k < MAX_SHARDS:
            raise FecError(f"k={k} must be in 1..{MAX_SHARDS - 1}")
        if not 0.0 < target_block_loss < 1.0:
            raise FecError(f"target_block_loss={target_block_loss} must be a probability in (0, 1)")
        max_m = min(MAX_SHARDS - k, 2 * k) if max_m is None else max_m
        if not 0 <= min_m <= max_m <= MAX_SHARDS - k:
            raise FecError(f"need 0 <= min_m={min_m} <= max_m={max_m} <= {MAX_SHARDS - k} for k={k}")
        if not 0.0 < ewma_weight <= 1.0:
            raise FecError(f"ewma_weight={ewma_weight} must be in (0, 1]")
        self.k: Final = k
        self.target_block_loss: Final = target_block_loss
        self.min_m: Final = min_m
        self.max_m: Final = max_m
        self.window_shards: Final = window_shards
        self.ewma_weight: Final = ewma_weight
        self.confidence_z: Final = confidence_z
        self.down_margin: Final = down_margin
        self.hold_blocks: Final = hold_blocks
        self.loss_rate = prior_loss_rate  # EWMA of per-window loss fractions
        # Variance factor of the EWMA: sum over its terms of weight^2 / shards in that term, so
        # var(loss_rate) = p (1 - p) * _variance_factor. The prior counts as `prior_shards`.
        self._variance_factor = 1.0 / prior_shards
        self._window_sent = 0
        self._window_lost = 0
        self._calm_blocks = 0
        self.m = self._required_m(self.planned_loss_rate)

    # -- estimate -------------------------------------------------------------------------------

    @property
    def effective_shards(self) -> float:
        """How many independent shards' worth of evidence the EWMA holds (Kish effective size).

        An EWMA with weight a over windows of W shards settles at W * (2 - a) / a shards (2,304
        for the defaults): old windows fade, so confidence stops growing, which is what lets the
        controller follow a path whose loss changes.
        """
        return 1.0 / self._variance_factor

    @property
    def planned_loss_rate(self) -> float:
        """The loss rate m is chosen for: the Wilson upper bound of the EWMA estimate."""
        return wilson_upper_bound(self.loss_rate, self.effective_shards, self.confidence_z)

    def observe(self, sent: int, lost: int) -> int:
        """Account for one block (or any batch) of shards; returns m for the next block."""
        if not 0 <= lost <= sent:
            raise FecError(f"observed {lost} lost of {sent} sent shards")
        self._window_sent += sent
        self._window_lost += lost
        if self._window_sent >= self.window_shards:
            fraction = self._window_lost / self._window_sent
            a = self.ewma_weight
            self.loss_rate += a * (fraction - self.loss_rate)
            self._variance_factor = self._variance_factor * (1 - a) ** 2 + a * a / self._window_sent
            self._window_sent = self._window_lost = 0
        return self.decide().m

    # -- decision -------------------------------------------------------------------------------

    def _required_m(self, loss_rate: float) -> int:
        m = self.min_m
        while m < self.max_m and block_loss_probability(self.k, m, loss_rate) > self.target_block_loss:
            m += 1
        return m

    def decide(self) -> RedundancyDecision:
        """Re-evaluate m against the current estimate, with hysteresis, and return the choice."""
        planned = self.planned_loss_rate
        if block_loss_probability(self.k, self.m, planned) > self.target_block_loss:
            self.m = self._required_m(planned)  # up at once, straight to what is needed
            self._calm_blocks = 0
        elif self.m > self.min_m and (
            block_loss_probability(self.k, self.m - 1, planned) <= self.target_block_loss * self.down_margin
        ):
            self._calm_blocks += 1
            if self._calm_blocks >= self.hold_blocks:
                self.m -= 1  # down one step, then wait again
                self._calm_blocks = 0
        else:
            self._calm_blocks = 0
        predicted = block_loss_probability(self.k, self.m, planned)
        return RedundancyDecision(self.m, planned, predicted, predicted <= self.target_block_loss)
