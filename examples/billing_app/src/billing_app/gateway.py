"""A stand-in payment gateway: in-process state the tests can steer."""

from __future__ import annotations

from dataclasses import dataclass, field


class GatewayUnavailable(Exception):
    """The gateway timed out; charging again later may work."""


class CardDeclined(Exception):
    """The card was declined; charging again will not help."""


@dataclass
class Gateway:
    """Records charges; ``outages`` makes the next N charges fail as unavailable."""

    charges: list[tuple[str, int]] = field(default_factory=list)
    outages: int = 0
    declined: set[str] = field(default_factory=set)

    def charge(self, customer_id: str, amount_cents: int) -> str:
        if self.outages > 0:
            self.outages -= 1
            raise GatewayUnavailable("gateway timed out")
        if customer_id in self.declined:
            raise CardDeclined(f"card of {customer_id} declined")
        self.charges.append((customer_id, amount_cents))
        return f"ch_{len(self.charges)}"


#: The process-wide gateway (a real app would build a client from its settings).
gateway = Gateway()
