"""``python -m lyra_core.cli``: the ``lyra`` command."""

from lyra_core.cli import main

raise SystemExit(main())
