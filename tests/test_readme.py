"""Every Python block of the README runs as written and prints what the README says.

Each block runs in a process of its own with ``REMBUS_BASE_URL`` set to a
broker started for this module; its output must equal the ``text`` block that
follows it after a ``prints:`` line (no such block: it must print nothing),
with nothing on stderr. Every block runs twice, after all the others, so a
block that leaves state in the broker which breaks a later run (or another
block) fails. A block that cannot run alone is preceded by
``<!-- readme-test: skip -->``; the skipped blocks must be exactly ``SKIPPED``.
A block that serves until Ctrl-C is preceded by
``<!-- readme-test: serves METHOD [ARGS] RESULT -->`` (JSON): the test calls the
method until the block answers, expects RESULT, then sends SIGINT and expects a
quiet exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import rembus.sync
from broker_process import WAIT, BrokerProcess

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
SKIP_MARK = "<!-- readme-test: skip -->"
SKIPPED = {"Tkinter"}  # headings of the blocks marked as not runnable alone
SERVES_MARK = re.compile(r"<!-- readme-test: serves (\w+) (\[.*\]) (.+) -->\s*$")


@dataclass(frozen=True)
class Block:
    """A fenced ``python`` block of the README."""

    heading: str
    code: str
    expected: str
    skipped: bool
    serves: tuple[str, list[Any], Any] | None = None
    """``(method, args, result)`` for a block that serves until Ctrl-C."""


def python_blocks(text: str) -> list[Block]:
    """The README's Python blocks in order, with what each one prints."""
    fences = list(FENCE.finditer(text))
    blocks = []
    for i, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        before = text[:fence.start()]
        heading = re.findall(r"^#+ (.+)$", before, re.M)[-1]
        expected = ""
        following = fences[i + 1] if i + 1 < len(fences) else None
        if (following is not None and following.group(1) == "text"
                and text[fence.end():following.start()].strip() == "prints:"):
            expected = following.group(2)
        serves = SERVES_MARK.search(before)
        blocks.append(Block(heading, fence.group(2), expected,
                            before.rstrip().endswith(SKIP_MARK),
                            None if serves is None else
                            (serves.group(1), json.loads(serves.group(2)),
                             json.loads(serves.group(3)))))
    return blocks


BLOCKS = python_blocks(README)
RUNNABLE = [block for block in BLOCKS if not block.skipped and block.serves is None]
SERVING = [block for block in BLOCKS if block.serves is not None]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path_factory.mktemp("readme-broker")) as running:
        yield running


def test_readme_blocks_are_found_and_only_the_expected_ones_are_skipped() -> None:
    headings = [block.heading for block in BLOCKS]
    assert len(set(headings)) == len(headings), headings  # the test ids are unique
    assert {"Async", "Sync", "Blocking, no thread"} <= set(headings)
    assert {block.heading for block in BLOCKS if block.skipped} == SKIPPED
    assert all(block.expected for block in RUNNABLE if "print(" in block.code)


@pytest.mark.parametrize(("run", "block"), [(run, block) for run in (1, 2) for block in RUNNABLE],
                         ids=[f"{block.heading}-{run}" for run in (1, 2) for block in RUNNABLE])
def test_readme_block_runs_as_written(run: int, block: Block, broker: BrokerProcess) -> None:
    env = {**os.environ, "REMBUS_BASE_URL": broker.url}
    done = subprocess.run([sys.executable, "-c", block.code], env=env, capture_output=True,
                          text=True, timeout=WAIT)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout == block.expected


@pytest.mark.parametrize("block", SERVING, ids=[block.heading for block in SERVING])
def test_readme_serving_block_answers_and_stops_quietly_on_ctrl_c(
        block: Block, broker: BrokerProcess) -> None:
    assert block.serves is not None
    method, args, result = block.serves
    env = {**os.environ, "REMBUS_BASE_URL": broker.url}
    # a child of a non-interactive shell inherits SIGINT ignored: restore the default
    proc = subprocess.Popen([sys.executable, "-c", block.code], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        with rembus.sync.component(broker.url, reconnect=False) as caller:
            deadline = time.monotonic() + WAIT
            while True:  # until the block has exposed its method
                try:
                    assert caller.rpc(method, *args) == result
                    break
                except (rembus.sync.MethodNotFound, rembus.sync.MethodUnavailable):
                    assert proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=WAIT)
        assert (proc.returncode, err) == (0, ""), err
        assert out == block.expected
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _section(heading: str) -> str:
    return README.split(heading + "\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def test_readme_broker_table_documents_every_option_and_the_exit_codes() -> None:
    from rembus.cli import client as cli_client
    from rembus.cli import command as cli

    broker_parser = next(action for action in cli.build_parser()._actions
                         if isinstance(action, argparse._SubParsersAction)).choices["broker"]
    options = {option for action in broker_parser._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"}
    section = _section("## The broker")
    documented = set(re.findall(r"^\| `(--[\w-]+)`(?:, `(--[\w-]+)`)? \|", section, re.M))
    assert options == {option for pair in documented for option in pair if option}
    codes = dict(re.findall(r"^\| (\d) \| (.+) \|$", section, re.M))
    assert set(codes) == {str(cli.EXIT_OK), str(cli.EXIT_FAILURE), str(cli.EXIT_USAGE),
                          str(cli_client.EXIT_FAILURE)}
    assert "usage error" in codes[str(cli.EXIT_USAGE)]
    assert "--log-format json" in _section("### Logs")
