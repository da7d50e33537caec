"""Processes for tests; the code lives in :mod:`rembus.testing.process`."""

from __future__ import annotations

from rembus.testing.process import WAIT, BrokerProcess, Process, rembus_cli

__all__ = ["WAIT", "BrokerProcess", "Process", "rembus_cli"]
