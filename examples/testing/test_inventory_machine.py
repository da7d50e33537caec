"""A hypothesis state machine: the inventory against a model, with connections cut
and the broker restarted between steps.

Every example builds its own :class:`~rembus.testing.Network` and drives it
with ``net.run``; hypothesis then shrinks a failing run to the fewest steps.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from inventory import InventoryClient, InventoryServer

from rembus.errors import RembusError
from rembus.testing import Network

ITEMS = st.sampled_from(["apple", "pear"])


class InventoryMachine(RuleBasedStateMachine):
    """The shop's view of the stock always equals a plain dict's."""

    def __init__(self) -> None:
        super().__init__()
        self.net = Network()
        self.model = {"apple": 5, "pear": 5}

    @initialize()
    def start(self) -> None:
        async def connect() -> InventoryClient:
            await InventoryServer(self.model).serve(await self.net.component("inventory"))
            return InventoryClient(await self.net.component("shop"))

        self.client = self.net.run(connect())

    def call(self, coro: Any) -> Any:
        return self.net.run(coro)

    @rule(item=ITEMS, n=st.integers(1, 4))
    def reserve(self, item: str, n: int) -> None:
        try:
            left = self.call(self.client.reserve(item, n))
        except RembusError:
            assert n > self.model[item]
        else:
            self.model[item] -= n
            assert left == self.model[item]

    @rule(item=ITEMS, n=st.integers(1, 4))
    def release(self, item: str, n: int) -> None:
        self.model[item] += n
        assert self.call(self.client.release(item, n)) == self.model[item]

    @rule(who=st.sampled_from(["shop", "inventory"]))
    def cut(self, who: str) -> None:
        self.net.link(who).cut()
        self.call(self.net.advance(1.0))  # both reconnect within their first backoff step

    @rule()
    def restart_broker(self) -> None:
        self.net.restart_broker()
        self.call(self.net.advance(1.0))

    @invariant()
    def stock_matches(self) -> None:
        if hasattr(self, "client"):
            for item, count in self.model.items():
                assert self.call(self.client.stock(item)) == count

    def teardown(self) -> None:
        self.net.shutdown()


InventoryMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=15,
                                              deadline=None)
TestInventory = InventoryMachine.TestCase
