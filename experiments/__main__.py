"""``python -m experiments experiment run ...``: the same parser `phalanx` gets via `register`."""

from experiments.cli import main

raise SystemExit(main())
