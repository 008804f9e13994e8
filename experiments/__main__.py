"""``python -m experiments experiment run ...``: the same parser `phalanx` gets via `register`."""

from phalanx.experiments.cli import main

raise SystemExit(main())
