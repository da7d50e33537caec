"""Make ``docs/status-page.png``: the status page of a broker with some traffic.

    python tests/status_screenshot.py [docs/status-page.png]

Needs Chromium (Debian package ``chromium``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from broker_process import BrokerProcess
from status_page import chromium, traffic


def main(out: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp, BrokerProcess(Path(tmp) / "data") as broker, \
            traffic(broker.url):
        done = chromium(f"http://127.0.0.1:{broker.port}/status", Path(tmp) / "profile",
                        f"--screenshot={out.resolve()}", "--window-size=900,640",
                        "--hide-scrollbars")
    if done.returncode != 0 or not out.exists():
        print(done.stderr, file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/status-page.png")))
