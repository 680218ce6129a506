"""Stream section of `python -m nyx.bench micro`: the stream core's packets per CPU-second beside
aioquic's own `QuicConnection` pair, both exchanging stream data in memory with no sockets.

One "packet" is one record (ours, at most 638 bytes, filling a 646-byte Sphinx message) or one
QUIC datagram (aioquic's, up to 1,200 bytes), counted in both directions: the data sender's
packets and the receiver's ACKs. Each side runs the whole protocol a packet costs: framing, AEAD
sealing and opening, ACK processing, flow control and stream reassembly. The figure is packets
per second of this process's CPU time (`time.process_time`), so another process on the machine
does not skew it, and the two are measured in the same run. Ratio >= 1: the stream core costs no
more per packet than QUIC's reference implementation in Python.

Also: the memory an idle session costs (tracemalloc over 1,000 sessions from real handshakes).
"""

from __future__ import annotations

import time
import tracemalloc

from nyx.bench.timing import MicroRecord
from nyx.stream.session import Session, SessionConfig
from nyx.stream.simulate import handshake_keys

_CHUNK = 64 * 1024


def _session_pair() -> tuple[Session, Session]:
    client_keys, server_keys = handshake_keys()
    config = SessionConfig(stream_window_bytes=1 << 22, session_window_bytes=1 << 24, stream_buffer_bytes=1 << 20)
    return Session(client_keys, 0.0, config), Session(server_keys, 0.0, config)


def nyx_packets_per_cpu_s(budget_s: float) -> float:
    """Records moved per CPU-second: one stream's bytes one way, ACKs the other."""
    client, server = _session_pair()
    stream = client.open_stream()
    payload = bytes(_CHUNK)
    packets, now = 0, 0.0
    start = time.process_time()
    while time.process_time() - start < budget_s:
        if client.room(stream):
            client.write(stream, payload)
        now += 0.001
        while (record := client.next_record(now)) is not None:
            server.receive_record(record, now)
            packets += 1
        server.read(stream)
        while (record := server.next_record(now + 0.2)) is not None:  # ACKs, due by time
            client.receive_record(record, now)
            packets += 1
    return packets / (time.process_time() - start)


def aioquic_packets_per_cpu_s(budget_s: float) -> float:
    """Datagrams moved per CPU-second between two aioquic QuicConnections in memory."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.events import StreamDataReceived

    from nyx.transport.certs import NodeIdentity

    identity = NodeIdentity.generate("bench")
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    server_config = QuicConfiguration(is_client=False, alpn_protocols=["nyx-bench"])
    server_config.certificate = identity.certificate
    server_config.private_key = load_pem_private_key(identity.private_key_pem, None)
    client_config = QuicConfiguration(is_client=True, alpn_protocols=["nyx-bench"], verify_mode=0)
    client = QuicConnection(configuration=client_config)
    server = QuicConnection(configuration=server_config, original_destination_connection_id=client.original_destination_connection_id)
    client_addr, server_addr = ("127.0.0.1", 1), ("127.0.0.1", 2)
    now = time.monotonic()
    client.connect(server_addr, now=now)

    def exchange(at: float) -> int:
        moved = 0
        for sender, receiver, source in ((client, server, client_addr), (server, client, server_addr)):
            for data, _ in sender.datagrams_to_send(now=at):
                receiver.receive_datagram(data, source, now=at)
                moved += 1
        return moved

    for _ in range(10):  # the handshake
        exchange(now)
    stream = client.get_next_available_stream_id()
    payload = bytes(_CHUNK)
    packets = 0
    start = time.process_time()
    while time.process_time() - start < budget_s:
        now += 0.001
        client.send_stream_data(stream, payload)
        packets += exchange(now)
        while (event := server.next_event()) is not None:
            assert not isinstance(event, StreamDataReceived) or event.stream_id == stream
        packets += exchange(now + 0.03)  # let delayed ACKs go
    return packets / (time.process_time() - start)


def idle_session_bytes(count: int = 1000) -> float:
    """Memory per idle session: both keys' record layers, stream maps, recovery, ACK state."""
    keys = [handshake_keys() for _ in range(count)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    sessions = [Session(k[1], 0.0) for k in keys]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(sessions) == count
    return (after - before) / count


def fec_effect(loss: float, seeds: int = 8) -> tuple[float, float, float, float]:
    """(mean completion s, real retransmissions) without and with FEC: 8 streams of 3 KB over
    simulated 3-hop paths (50 ms mean per hop) losing `loss` of records each way."""
    import random

    from nyx.stream.blocks import FEC_OVERHEAD
    from nyx.stream.simulate import PathModel, SessionPair

    out = []
    for fec in (False, True):
        done_s = retransmitted = 0.0
        for seed in range(seeds):
            config = SessionConfig(max_record_bytes=638 - FEC_OVERHEAD)
            path = PathModel(loss=loss)
            pair = SessionPair(path, path, seed=seed, client_config=config, server_config=config)
            if fec:
                pair.enable_fec(638, expected_loss=loss)
            rng = random.Random(seed)
            ids = pair.client_sends([rng.randbytes(3000) for _ in range(8)])
            done_s += pair.run(600.0, stop=lambda p: len(p.server.eof) == len(ids)).now
            recovery = pair.client.session._recovery
            retransmitted += recovery.lost_total - recovery.spurious_lost_total
        out += [done_s / seeds, retransmitted / seeds]
    return out[0], out[1], out[2], out[3]


def surb_overhead(loss: float, seeds: int = 4) -> tuple[float, float]:
    """(forward SURB bytes per reply byte, SURBs spent per full reply record) for an echo of
    5 x 20 KB over simulated 3-hop paths losing `loss` each way."""
    import random

    from nyx.stream.simulate import PathModel, SessionPair
    from nyx.stream.surbs import SURB_BYTES, SurbPolicy

    config = SessionConfig(surbs=SurbPolicy())
    forward = reply = spent = 0
    for seed in range(seeds):
        path = PathModel(loss=loss)
        pair = SessionPair(path, path, seed=seed, client_config=config, server_config=config)
        pair.server.echo = True
        rng = random.Random(seed)
        ids = pair.client_sends([rng.randbytes(20_000) for _ in range(5)])
        pair.run(3600.0, stop=lambda p: len(p.client.eof) == len(ids))
        supply, pool = pair.client.session.surb_supply, pair.server.session.surb_pool
        assert supply is not None and pool is not None
        forward += supply.sent * SURB_BYTES
        reply += sum(len(pair.client.received.get(i, b"")) for i in ids)
        spent += pool.spent
    full_records = reply / (SessionConfig().max_record_bytes - 28 - 8)
    return forward / reply, spent / full_records


def records(budget_s: float) -> list[MicroRecord]:
    ours = nyx_packets_per_cpu_s(max(budget_s, 0.5))
    quic = aioquic_packets_per_cpu_s(max(budget_s, 0.5))
    idle = idle_session_bytes()
    out = [
        MicroRecord("stream core packets per CPU-second (send, receive, ACK)", ours, "aioquic QuicConnection pair in memory", quic),
        MicroRecord(f"stream idle session: {idle:,.0f} B (sessions per GiB)", (1 << 30) / idle, "100,000 sessions in 2 GiB", 100_000 / 2),
    ]
    for loss in (0.0, 0.05):
        per_byte, per_record = surb_overhead(loss)
        out.append(
            MicroRecord(
                f"stream SURBs at {loss:.0%} loss: {per_byte:.2f} fwd B/reply B, {per_record:.2f} spent per full record",
                1 / per_byte, "one 552 B SURB per full 602 B reply record", 602 / 552,
            )
        )
    for loss in (0.05, 0.10):
        plain_s, plain_retx, fec_s, fec_retx = fec_effect(loss)
        out.append(
            MicroRecord(
                f"stream FEC at {loss:.0%} loss: 24 KB in {fec_s:.2f} s, {fec_retx:.1f} resent (1/s)",
                1 / fec_s, f"no FEC: {plain_s:.2f} s, {plain_retx:.1f} resent", 1 / plain_s,
            )
        )
    return out
