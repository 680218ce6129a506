"""The asyncio shell: asyncio-streams semantics (write/drain/read/readexactly/close/wait_closed)
over two real sessions joined by an in-memory channel that delays, reorders and loses records."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from nyx.stream.handshake import CloseCode
from nyx.stream.session import Session, SessionConfig
from nyx.stream.shell import DRAIN_HIGH_WATER, SessionShell, StreamClosedError
from nyx.stream.simulate import handshake_keys
from nyx.stream.surbs import SurbPolicy


class Channel:
    """Delivers each record after a random delay (so out of order), losing some; owns its timers."""

    def __init__(self, loss: float = 0.0, seed: int = 1, mean_delay_s: float = 0.004) -> None:
        self.rng = random.Random(seed)
        self.loss, self.mean_delay_s = loss, mean_delay_s
        self.handles: set[asyncio.TimerHandle] = set()
        self.sent = 0

    def link(self, deliver):  # type: ignore[no-untyped-def]
        def send(*message: bytes) -> None:
            record = message[-1]  # (surb, record) from an exit on SURBs: the SURB routes it
            self.sent += 1
            if self.rng.random() < self.loss:
                return
            loop = asyncio.get_running_loop()
            handle = loop.call_later(self.rng.expovariate(1 / self.mean_delay_s), lambda: (self.handles.discard(handle), deliver(record)))
            self.handles.add(handle)
        return send

    def close(self) -> None:
        for handle in self.handles:
            handle.cancel()


async def _pair(loss: float = 0.0, config: SessionConfig = SessionConfig()):  # type: ignore[no-untyped-def]
    client_keys, server_keys = handshake_keys()
    channel = Channel(loss)
    now = time.monotonic()  # the shells' clock: a session is created on the clock that drives it
    client = SessionShell(Session(client_keys, now, config), send=lambda *m: None)
    server = SessionShell(Session(server_keys, now, config), send=lambda *m: None)
    client._send = channel.link(server.receive_record)
    server._send = channel.link(client.receive_record)
    return client, server, channel


async def _echo(server: SessionShell) -> None:
    while True:
        reader, writer = await server.accept()
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()


@pytest.mark.parametrize("loss", [0.0, 0.1])
async def test_bytes_written_come_back_exactly_through_an_echo_with_stream_semantics(loss: float) -> None:
    client, server, channel = await _pair(loss)
    payload = random.Random(2).randbytes(300_000)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(client.run()), tg.create_task(server.run()), tg.create_task(_echo(server))]
        reader, writer = await client.open_connection()

        async def send() -> None:
            for start in range(0, len(payload), 10_000):
                writer.write(payload[start : start + 10_000])
                await writer.drain()
            writer.write_eof()

        sender = tg.create_task(send())
        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 60)
        assert echoed == payload and await reader.read() == b"" and reader.at_eof()
        await sender
        await asyncio.wait_for(writer.wait_closed(), 30)
        await asyncio.wait_for(client.close(CloseCode.APPLICATION, "done"), 30)
        await asyncio.wait_for(server.closed.wait(), 30)
        for task in tasks:
            task.cancel()
    channel.close()
    assert server.session.closed is not None and server.session.closed.reason == "done"


async def test_drain_waits_while_the_peer_does_not_read_and_memory_stays_bounded() -> None:
    config = SessionConfig(stream_window_bytes=16_384, session_window_bytes=65_536, stream_buffer_bytes=16_384)
    client, server, channel = await _pair(config=config)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(client.run()), tg.create_task(server.run())]
        reader, writer = await client.open_connection()
        writer.write(bytes(500_000))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(writer.drain(), 0.5)  # the peer accepted the stream but reads nothing
        peer_reader, _ = await server.accept()
        assert server.session._recv[writer.stream_id].held_bytes <= 16_384  # the window, no more
        assert client.session._send[writer.stream_id].buffered <= 16_384  # the send buffer, no more
        got = 0
        while got < 500_000 - DRAIN_HIGH_WATER:  # reading opens the window; drain completes
            got += len(await asyncio.wait_for(peer_reader.read(50_000), 10))
        await asyncio.wait_for(writer.drain(), 10)
        for task in tasks:
            task.cancel()
    channel.close()


async def test_a_reset_reaches_the_reader_as_an_error_that_names_the_code() -> None:
    client, server, channel = await _pair()
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(client.run()), tg.create_task(server.run())]
        reader, writer = await client.open_connection()
        writer.write(b"hello")
        peer_reader, _ = await asyncio.wait_for(server.accept(), 5)
        assert await peer_reader.readexactly(5) == b"hello"
        client.session.reset_stream(writer.stream_id, 42)
        client._wake()
        with pytest.raises(StreamClosedError, match="code 42"):
            await asyncio.wait_for(peer_reader.read(), 5)
        for task in tasks:
            task.cancel()
    channel.close()


async def test_an_exit_on_surbs_answers_through_the_shell() -> None:
    config = SessionConfig(surbs=SurbPolicy())
    client, server, channel = await _pair(config=config)
    spent: list[bytes] = []
    deliver = client.receive_record

    def send_reply(surb: bytes, record: bytes) -> None:
        spent.append(surb)
        deliver(record)

    server._send = send_reply
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(client.run()), tg.create_task(server.run()), tg.create_task(_echo(server))]
        client.session.send_surbs([bytes([i]) * 552 for i in range(24)])
        reader, writer = await client.open_connection()
        writer.write(b"ping" * 1000)
        writer.write_eof()
        assert await asyncio.wait_for(reader.readexactly(4000), 10) == b"ping" * 1000
        for task in tasks:
            task.cancel()
    channel.close()
    assert spent and len(set(spent)) == len(spent)  # every reply on its own SURB
