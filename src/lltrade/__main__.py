"""``python -m lltrade``: the same as the ``lltrade`` command."""

from lltrade.cli import main

raise SystemExit(main())
