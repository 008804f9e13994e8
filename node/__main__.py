"""`python -m phalanx.node ...` is the `phalanx` command."""

import sys

from phalanx.node.cli import main

sys.exit(main())
