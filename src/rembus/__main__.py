"""``python -m rembus``."""

import sys

from rembus.cli.main import main

sys.exit(main())
