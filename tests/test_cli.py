"""The ``rembus`` command line: every option documented, every bad value a usage error."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rembus.cli import command as cli

EXIT_USAGE = 2

BAD_VALUES = [
    ["broker", "--port", "80000"],
    ["broker", "--port", "-1"],
    ["broker", "--port", "x"],
    ["broker", "--max-connections", "0"],
    ["broker", "--max-connections", "-3"],
    ["broker", "--max-message-size", "1.5"],
    ["broker", "--max-backlog", "0"],
    ["broker", "--retention-max-age", "-1"],
    ["broker", "--retention-max-age", "nan"],
    ["broker", "--retention-max-messages", "0"],
    ["broker", "--challenge-timeout", "0"],
    ["broker", "--challenge-timeout", "inf"],
    ["broker", "--pin-attempts", "0"],
    ["broker", "--pin-lockout", "-60"],
    ["broker", "--log-level", "LOUD"],
    ["broker", "--log-format", "xml"],
    ["broker", "--policy", "random"],
    ["broker", "--no-such-option"],
    ["sub", "t", "--count", "0"],
    ["rpc", "m", "--timeout", "-1"],
    ["pub", "t", "--qos", "3"],
    ["register", "x", "--key-type", "dsa"],
    ["broker", "tenant", "add", "acme"],
]


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REMBUS_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("argv", BAD_VALUES, ids=" ".join)
def test_cli_bad_values_are_one_line_usage_errors(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    _clean_env(monkeypatch)
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args(argv)
    assert exited.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("rembus") and ": error: " in err, err


@pytest.mark.parametrize(("argv", "env"), [
    (["broker", "--port", "80000"], {}),
    (["broker", "--max-connections", "0"], {}),
    (["broker", "--retention-max-age", "-1"], {}),
    (["broker"], {"REMBUS_PORT": "70000"}),
    (["broker"], {"REMBUS_POLICY": "random"}),
    (["broker"], {"REMBUS_CHALLENGE_TIMEOUT": "soon"}),
], ids=lambda v: " ".join(v) if isinstance(v, list) else " ".join(f"{k}={x}" for k, x in v.items()))
def test_cli_bad_values_exit_2_without_traceback(argv: list[str], env: dict[str, str],
                                                 tmp_path: Path) -> None:
    """The whole command, including values only read from the environment at run time."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REMBUS_")}
    done = subprocess.run([sys.executable, "-m", "rembus", *argv, "--data-dir", str(tmp_path)],
                          env={**environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "error:" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not done.stdout


def _options(parser: argparse.ArgumentParser, prog: str = "rembus",
             ) -> Iterator[tuple[str, argparse.Action]]:
    """Every argument of every (sub)command, with the command it belongs to."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield f"{prog} {choice.dest}", choice
            for name, sub in action.choices.items():
                yield from _options(sub, f"{prog} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield prog, action


def test_cli_every_option_has_help_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    options = list(_options(cli.build_parser()))
    assert len(options) > 40  # the walk reaches the subcommands
    missing = []
    for command, action in options:
        name = f"{command} {'/'.join(action.option_strings) or action.dest}"
        text = action.help
        if not text or text == argparse.SUPPRESS:
            missing.append(f"{name}: no help")
        elif not action.option_strings or action.default in (None, argparse.SUPPRESS):
            continue
        elif isinstance(action.default, bool):
            if "default" not in text:
                missing.append(f"{name}: help does not say what the default is")
        elif "%(default)s" not in text:
            missing.append(f"{name}: help does not show %(default)s")
    assert not missing, "\n".join(missing)
