"""pytest-benchmark suite for nyx.stream: one data record through both sessions and back as an
ACK, and the frame codec on a typical packet.

CI runs these once with --benchmark-disable (each is then a correctness check); time them with
`python -m pytest bench/bench_stream.py --benchmark-enable`. The reference per packet is aioquic's
QuicConnection pair, measured in the same run by `python -m nyx.bench micro --only stream`.
"""

from __future__ import annotations

from typing import Any

from nyx.stream import frames as F
from nyx.stream.session import Session, SessionConfig
from nyx.stream.simulate import handshake_keys


def test_stream_record_round(benchmark: Any) -> None:
    client_keys, server_keys = handshake_keys()
    config = SessionConfig(stream_window_bytes=1 << 30, session_window_bytes=1 << 30, stream_buffer_bytes=1 << 20)
    client, server = Session(client_keys, 0.0, config), Session(server_keys, 0.0, config)
    stream = client.open_stream()
    moved = bytearray()
    clock = [0.0]

    def one_round() -> int:
        clock[0] += 0.001
        now = clock[0]
        if client.room(stream) > 600:
            client.write(stream, bytes(600))
        record = client.next_record(now)
        assert record is not None and len(record) <= config.max_record_bytes
        server.receive_record(record, now)
        moved.extend(server.read(stream))
        while (ack := server.next_record(now + 0.2)) is not None:
            client.receive_record(ack, now)
        return len(record)

    assert benchmark(one_round) > 500
    assert len(moved) > 0 and not client.drops and not server.drops


def test_frames_parse_typical_packet(benchmark: Any) -> None:
    payload = F.encode_frames([F.Ack(((90, 100), (50, 80), (10, 40)), 2500), F.Stream(4, 123_456, bytes(560), False)])
    frames = benchmark(F.parse_frames, payload)
    assert isinstance(frames[1], F.Stream) and len(frames[1].data) == 560
