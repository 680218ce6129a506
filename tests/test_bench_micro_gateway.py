"""`nyx.bench.micro_gateway`: the memory of N idle sessions at one ExitCore, measured in a fresh
process. Small N here (the real run is 100,000); the figures must be sane, and the verdict must be
able to fail."""

from __future__ import annotations

import dataclasses

import pytest

from nyx.bench import micro, micro_gateway
from nyx.bench.micro_gateway import GatewayMemory, measure
from nyx.stream.surbs import SURB_BYTES, SurbPolicy

N = 300


@pytest.fixture(scope="module")
def classic() -> GatewayMemory:
    return measure(N, "CLASSIC")


def test_every_session_opens_at_the_exit_and_holds_the_surbs_the_client_sent(classic: GatewayMemory) -> None:
    assert (classic.sessions, classic.requested, classic.suite) == (N, N, "CLASSIC")  # len(exit) in the child
    # 2 SURB envelopes beside the Init + `initial` in the first records, less one for the Accept, one for the ACK
    assert classic.surbs_held == N * SurbPolicy().initial
    assert classic.replay_cache == N


def test_bytes_per_session_are_positive_and_plausible(classic: GatewayMemory) -> None:
    assert classic.rss_after > classic.rss_before > 0
    assert classic.peak_rss >= classic.rss_after
    # at least the SURB payload it holds, and far below what would mean a leak of the client side
    assert SurbPolicy().initial * SURB_BYTES < classic.bytes_per_session < 200_000
    assert classic.projected_bytes == pytest.approx(classic.rss_before + 100_000 * classic.bytes_per_session)


def test_on_timer_past_the_idle_deadlines_closes_every_session(classic: GatewayMemory) -> None:
    assert (classic.expired_by_timer, classic.left_after_timer) == (N, 0)


def test_the_verdict_follows_the_limit(classic: GatewayMemory) -> None:
    assert classic.verdict == ("PASS" if classic.projected_bytes <= 2 * micro_gateway.GIB else "FAIL")
    assert dataclasses.replace(classic, limit_bytes=1 << 40).verdict == "PASS"
    assert dataclasses.replace(classic, limit_bytes=1 << 20).verdict == "FAIL"


def test_an_absurdly_low_limit_fails_end_to_end() -> None:
    result = measure(20, "CLASSIC", limit_bytes=1024, check_timer=False)
    assert result.sessions == 20 and result.limit_bytes == 1024
    assert result.verdict == "FAIL" and not result.passed
    assert (result.expired_by_timer, result.left_after_timer) == (-1, -1)  # not checked when told so


def test_the_micro_record_passes_exactly_when_the_verdict_does(classic: GatewayMemory) -> None:
    for limit in (1 << 20, 1 << 40):
        result = dataclasses.replace(classic, limit_bytes=limit)
        record = micro_gateway._record(result)
        assert (record.ratio >= 1) == result.passed
        assert result.verdict in record.name
    assert "gateway" in dict(micro.SECTIONS)


def test_a_failing_measurement_raises_with_the_child_s_error() -> None:
    with pytest.raises(RuntimeError, match="KeyError"):
        measure(1, "NO_SUCH_SUITE")
