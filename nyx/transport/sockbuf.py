"""Sizing a node's UDP socket buffers, and saying so when the kernel will not.

A QUIC sender on a fast path (loopback, a LAN, a peer in the same process) emits a congestion
window of datagrams at once; whatever does not fit the receiver's socket buffer while its event
loop is busy is dropped by the kernel, and a dropped DATAGRAM frame is never resent. Linux caps
SO_RCVBUF / SO_SNDBUF at `net.core.rmem_max` / `wmem_max` (212,992 bytes by default, about 90
full-size datagrams), so a node asks for more, falls back to the privileged SO_*BUFFORCE options
when it may (CAP_NET_ADMIN: a root container), and otherwise warns once with the sysctl that
lifts the cap, as quic-go does, rather than losing packets with no word: a node process logs it as
a warning at start (nyx/node/runtime.py); an embedded transport (a client) only at INFO, and
`QuicTransport.socket_buffers` says what was granted.

Linux grants twice the bytes asked (the other half pays for its bookkeeping) and reports that
doubled figure; the figures here are the kernel's own, and a buffer counts as granted when it
reports what an uncapped request would (`REPORTED_PER_BYTE_ASKED` of the request).
"""

from __future__ import annotations

import platform
import socket
import sys
from dataclasses import dataclass

# Python's socket module does not name these. Values of <asm-generic/socket.h>, which the common
# Linux architectures use (alpha, mips, parisc and sparc number them differently: not tried there).
_GENERIC_LINUX = {"x86_64", "amd64", "aarch64", "arm64", "i386", "i686", "riscv64", "ppc64le", "s390x"}
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
REPORTED_PER_BYTE_ASKED = 2 if sys.platform == "linux" else 1


@dataclass(frozen=True, slots=True)
class SocketBuffers:
    """What was asked of the kernel for each direction and what it granted (as it reports them)."""

    wanted: int
    receive: int
    send: int
    forced: bool  # the privileged option was needed and worked

    @property
    def capped(self) -> bool:
        """Whether either buffer is below the request (the kernel's cap, and no privilege to lift it)."""
        return min(self.receive, self.send) < self.wanted * REPORTED_PER_BYTE_ASKED


def _force_options() -> dict[int, int]:
    if sys.platform != "linux" or platform.machine().lower() not in _GENERIC_LINUX:
        return {}
    return {socket.SO_RCVBUF: SO_RCVBUFFORCE, socket.SO_SNDBUF: SO_SNDBUFFORCE}


def _read(sock: socket.socket, option: int) -> int:
    try:
        return int(sock.getsockopt(socket.SOL_SOCKET, option))
    except OSError:
        return 0


def size_udp_buffers(sock: socket.socket, wanted: int, *, force: bool = True) -> SocketBuffers:
    """Ask for `wanted` bytes of receive and send buffer on `sock`; where the kernel caps the
    request and `force` is set, retry with SO_*BUFFORCE (which only a privileged process may use).
    Never raises: a socket that refuses every option keeps the kernel's defaults."""
    force_options = _force_options() if force else {}
    forced = False
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, wanted)
        except OSError:  # pragma: no cover - platform dependent: the figures read below say so
            pass
        if _read(sock, option) < wanted * REPORTED_PER_BYTE_ASKED and option in force_options:
            try:
                sock.setsockopt(socket.SOL_SOCKET, force_options[option], wanted)
                forced = True
            except OSError:  # EPERM without CAP_NET_ADMIN: the warning below says what to do
                pass
    return SocketBuffers(wanted, _read(sock, socket.SO_RCVBUF), _read(sock, socket.SO_SNDBUF), forced)


def cap_message(node_id: str, buffers: SocketBuffers) -> str | None:
    """What to tell an operator when the kernel kept the buffers below the request: the sysctl."""
    if not buffers.capped:
        return None
    return (
        f"{node_id}: the kernel capped the UDP socket buffers at {buffers.receive} bytes received / {buffers.send} "
        f"sent (as it reports them) of {buffers.wanted} asked; bursts beyond that are dropped before QUIC sees "
        f"them. Raise the cap: sysctl -w net.core.rmem_max={buffers.wanted} net.core.wmem_max={buffers.wanted}"
    )
