"""`python -m phalanx`: the `phalanx` command."""

from phalanx.node.cli import main

raise SystemExit(main())
