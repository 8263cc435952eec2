"""``python -m telemetry``: the same as ``lltrade-telemetry``."""

import sys

from telemetry.exporter import main

sys.exit(main())
