"""The fact the cluster stage reads on each member: the interface on the route to an address."""

from __future__ import annotations

from pyinfra.api.facts import FactBase

from gpurig import cluster


class RouteInterface(FactBase[str | None]):
    """`eth0` when packets to `address` leave through eth0 (`ip route get`, or the kernel's
    routing table without iproute2); None when nothing routes there."""

    def command(self, address: str) -> str:
        return cluster.route_command(address)

    @staticmethod
    def default() -> str | None:
        return None

    def process(self, output: list[str]) -> str | None:
        return cluster.parse_route(output)
