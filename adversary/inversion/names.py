"""The attacks' and priors' names and the CLI's defaults, without torch.

`attacks`, `priors` and `experiment` re-export these, and ``phalanx attack --help`` and
``phalanx bench inversion --help`` read them here, so that building the parser loads no torch.
"""

from __future__ import annotations

METHODS: tuple[str, ...] = ("dlg", "idlg", "ig", "gan", "diffusion", "diffusion-ig")
# The generative prior each method needs (one of `PRIOR_KINDS`).
PRIOR_OF: dict[str, str] = {"gan": "gan", "diffusion": "diffusion", "diffusion-ig": "diffusion"}
PRIOR_KINDS: tuple[str, ...] = ("gan", "diffusion")
# Training steps of each prior kind when none are given.
DEFAULT_PRIOR_STEPS: dict[str, int] = {"gan": 1500, "diffusion": 1000}
# torch intra-op threads of `experiment.pinned_torch` (fixed for reproducibility).
DEFAULT_TORCH_THREADS = 1
# Label-recovery rules of `labels.recover_labels`, the default first.
LABEL_METHODS: tuple[str, ...] = ("peel", "ilrg", "llg")
DEFAULT_LABEL_METHOD = "peel"
