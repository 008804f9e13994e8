"""`python -m node ...` is the `phalanx` command."""

import sys

from node.cli import main

sys.exit(main())
