"""`phalanx attack` end to end: JSON output and one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import json

import pytest

from phalanx.adversary.inversion.cli import main, register


def test_register_adds_attack_subcommands() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["attack", "train-prior", "--kind", "gan", "--dataset", "digits"])
    assert callable(args.func)


def test_invert_prints_json_summary(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    code = main(
        [
            "attack",
            "invert",
            "--method",
            "idlg",
            "--dataset",
            "digits",
            "--model",
            "lenet-zhu",
            "--batch",
            "1",
            "--images",
            "2",
            "--iterations",
            "60",
            "--json",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["label_accuracy"] == 1.0
    assert summary["median_psnr"] >= 30.0
    assert summary["seconds_per_image"] > 0
    assert (tmp_path / "result.json").is_file()
    assert list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "magic"], "unknown method 'magic'"),
        (["--method", "idlg", "--batch", "100000"], "batch 100000 is larger than"),
        (["--method", "idlg", "--model", "vgg"], "unknown model 'vgg'"),
        (["--method", "idlg", "--target", "cluster-sum:x"], "needs an integer"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"--dataset": "digits", "--model": "lenet-zhu", "--batch": "1"}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        base[flag] = value
    argv = ["attack", "invert"] + [item for pair in base.items() for item in pair]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
