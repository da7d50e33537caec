"""``python -m rembus``."""

import sys

from rembus.cli.command import main

sys.exit(main())
