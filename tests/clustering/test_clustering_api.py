"""The curated public API of `clustering` and its purity (no node, no network imports)."""

from __future__ import annotations

import subprocess
import sys

from phalanx import clustering


def test_exports_are_importable_and_public() -> None:
    assert sorted(clustering.__all__) == sorted(set(clustering.__all__))
    for name in clustering.__all__:
        assert not name.startswith("_")
        assert getattr(clustering, name) is not None
    for entry_point in (
        "assign_clusters",
        "compute_assignment",
        "analyze_clusters",
        "NodeIdentity",
    ):
        assert entry_point in clustering.__all__


def test_importing_the_package_pulls_in_no_node_or_network_code() -> None:
    probe = (
        "import sys, clustering; "
        "bad = [m for m in ('node', 'grpc', 'matplotlib') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
