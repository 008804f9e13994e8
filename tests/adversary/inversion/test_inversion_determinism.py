"""`phalanx attack invert` gives the same bytes for a seed, whatever the threads and the load."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from phalanx.adversary.inversion.cli import main
from phalanx.adversary.inversion.experiment import pinned_torch

# DLG on a CNN at batch 2: L-BFGS amplifies the last bits that a 1- vs 2-thread reduction
# changes, so without pinning these two runs give different images.
ATTACK = [
    "attack",
    "invert",
    "--method",
    "dlg",
    "--dataset",
    "digits",
    "--model",
    "cnn",
    "--batch",
    "2",
    "--iterations",
    "20",
    "--seed",
    "3",
    "--json",
]


def _attack(threads_before: int, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    torch.set_num_threads(threads_before)
    assert main(ATTACK) == 0
    summary: dict[str, object] = json.loads(capsys.readouterr().out)
    return summary


def test_same_seed_same_bytes_with_other_threads_and_a_cpu_hog(
    capsys: pytest.CaptureFixture[str],
) -> None:
    threads = torch.get_num_threads()
    try:
        quiet = _attack(2, capsys)
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            loaded = _attack(1, capsys)
        finally:
            spinner.kill()
            spinner.wait()
    finally:
        torch.set_num_threads(threads)
    assert quiet["torch_threads"] == loaded["torch_threads"] == 1
    assert len(str(quiet["reconstruction_sha256"])) == 64
    assert quiet["reconstruction_sha256"] == loaded["reconstruction_sha256"]
    assert quiet["per_image"] == loaded["per_image"]
    assert quiet["median_psnr"] == loaded["median_psnr"]


def test_pinning_is_restored_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    argv = [*ATTACK[:11], "1", "--iterations", "5", "--torch-threads", "2", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["torch_threads"] == 2
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    with pytest.raises(ValueError, match="threads must be >= 1"), pinned_torch(0):
        pass
    assert main([*argv[:-1], "--torch-threads", "0"]) == 2
