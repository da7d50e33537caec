"""rembus.broker.memory: the C heap setting for processes that move large messages."""

from __future__ import annotations

import platform
import sys

import pytest

from rembus.broker.memory import keep_freed_memory
from rembus.cli.command import build_parser

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_zero_leaves_the_defaults() -> None:
    assert keep_freed_memory(0) is False


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_glibc_takes_the_setting() -> None:
    assert keep_freed_memory(64 << 20) is True


def test_broker_options() -> None:
    args = build_parser().parse_args(["broker"])
    assert (args.keep_freed_mib, args.no_numpy) == (64, False)
    args = build_parser().parse_args(["broker", "--keep-freed-mib", "0", "--no-numpy"])
    assert (args.keep_freed_mib, args.no_numpy) == (0, True)
