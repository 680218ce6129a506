"""`nyx.testnet`: a whole Nyx network on one machine, for trying it, testing it and demos.

    from nyx.testnet import Testnet

    async with Testnet(layers=3, gateways=2, allow=["127.0.0.1:8080"]) as net:
        async with net.client() as client:             # nyx.Client on net.directory_path
            reader, writer = await client.open_connection("echo")

`Testnet` (`nyx.testnet.local`) runs every node as a real process (`python -m nyx.mix`, `python -m
nyx.stream gateway`) over real QUIC on 127.0.0.1, on a directory file or (`directory_service=True`)
registered with a `python -m nyx.directory serve` process; `SimTestnet` (`nyx.testnet.sim`) runs the same
node classes in this process over `SimTransport`, for scale (tens of nodes start in a second).
`python -m nyx.testnet` is the program around both (docs/stream.md, "A local testnet").
"""

from nyx.testnet.layout import TestnetOptions
from nyx.testnet.local import Testnet, TestnetError
from nyx.testnet.probe import EchoResult
from nyx.testnet.processes import ChildExit
from nyx.testnet.sim import SimTestnet

__all__ = ["ChildExit", "EchoResult", "SimTestnet", "Testnet", "TestnetError", "TestnetOptions"]
