"""The README's code that talks to a broker runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from broker_process import BrokerProcess

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def snippet(after_heading: str) -> str:
    section = README.split(after_heading, 1)[1]
    return section.split("```python", 1)[1].split("```", 1)[0]


def test_driving_a_client_connection_by_hand(tmp_path: Path) -> None:
    code = snippet("### Driving a ClientConnection by hand over a plain socket")
    with BrokerProcess(tmp_path / "broker") as broker:
        code = re.sub(r"\b8000\b", str(broker.port), code)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("python_")


def test_codec_example() -> None:
    exec(compile(snippet("## The protocol core: `rembus_proto`"), "README", "exec"), {})
