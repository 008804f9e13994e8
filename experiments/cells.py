"""Cell hooks that run inside a cell's own process: the inversion (privacy) cell.

``python -m experiments.cells PARAMS.json RESULT.json`` runs `run_inversion_cell` on the mapping in
PARAMS.json and writes its result (or ``{"error": ...}``) to RESULT.json; the runner starts it as a
subprocess so inversion cells run in parallel and can be interrupted like testbed cells.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

# Keys an inversion cell accepts (the `phalanx attack invert` knobs); spec axes must be among them.
INVERSION_KEYS = (
    "method",
    "dataset",
    "model",
    "batch",
    "images",
    "target",
    "defense",
    "trained",
    "iterations",
    "lr",
    "restarts",
    "seed",
    "prior_steps",
    "utility_epochs",
)


def run_inversion_cell(params: dict[str, Any]) -> dict[str, Any]:
    """Attack one configuration with `adversary.inversion` and score privacy and utility.

    Privacy: median PSNR / SSIM of the matched reconstructions (Geiping et al. 2020 report PSNR);
    utility: test accuracy of the model after `utility_epochs` epochs of local training whose
    update passes through the same defense (0 skips it). Returns plain JSON values.
    """
    unknown = sorted(set(params) - set(INVERSION_KEYS))
    if unknown:
        raise ValueError(f"inversion cell: unknown keys {unknown}; known: {list(INVERSION_KEYS)}")
    try:
        from phalanx.adversary.inversion.experiment import ExperimentSpec, run_experiment
        from phalanx.adversary.inversion.targets import parse_defense
    except ImportError as error:  # the inversion room is not there yet
        raise RuntimeError(f"inversion cells need adversary.inversion ({error})") from None
    from phalanx.learning.data import load_dataset

    seed = int(params.get("seed", 0))
    dataset = load_dataset(str(params.get("dataset", "digits")), seed=seed)
    defense_text = params.get("defense")
    spec = ExperimentSpec(
        method=str(params.get("method", "idlg")),
        model=str(params.get("model", "mlp")),
        batch=int(params.get("batch", 1)),
        images=params.get("images"),
        target=str(params.get("target", "update")),
        defense=parse_defense(defense_text, seed),
        trained=bool(params.get("trained", False)),
        iterations=params.get("iterations"),
        seed=seed,
        lr=float(params.get("lr", 0.1)),
        restarts=int(params.get("restarts", 1)),
        prior_steps=params.get("prior_steps"),
    )
    result = run_experiment(spec, dataset)
    summary = result.summary()
    output: dict[str, Any] = {
        "psnr": summary["median_psnr"],
        "ssim": summary["median_ssim"],
        "mse": summary["median_mse"],
        "label_accuracy": summary["label_accuracy"],
        "seconds_per_image": summary["seconds_per_image"],
        "images": summary["images"],
    }
    epochs = int(params.get("utility_epochs", 1))
    if epochs > 0:
        output["utility_accuracy"] = _defended_utility(
            spec.model, dataset, defense_text, seed, epochs, spec.lr
        )
    return output


def _defended_utility(
    model_name: str, dataset: Any, defense_text: Any, seed: int, epochs: int, lr: float
) -> float:
    """Test accuracy after training, with each epoch's update passed through the defense."""
    import torch

    from phalanx.adversary.inversion.targets import parse_defense
    from phalanx.learning.models import build_model
    from phalanx.learning.train import TrainConfig, train_local

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(model_name, dataset.input_shape, dataset.num_classes)
    defense = parse_defense(defense_text, seed)
    for epoch in range(epochs):
        before = [p.detach().clone() for p in model.parameters()]
        train_local(
            model,
            dataset.train_x,
            dataset.train_y,
            TrainConfig(epochs=1, batch_size=32, lr=lr),
            seed + epoch,
        )
        if defense is not None:
            update = [p.detach() - b for p, b in zip(model.parameters(), before, strict=True)]
            defended = defense(update)
            with torch.no_grad():
                for p, b, u in zip(model.parameters(), before, defended, strict=True):
                    p.copy_(b + u.to(p.dtype))
    model.eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(dataset.test_x))
        predicted = logits.argmax(dim=1).numpy()
    return float((predicted == dataset.test_y).mean())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m experiments.cells PARAMS.json RESULT.json", file=sys.stderr)
        return 2
    params = json.loads(Path(args[0]).read_text())
    try:
        import torch

        torch.set_num_threads(1)
        result: dict[str, Any] = run_inversion_cell(params)
    except Exception as error:  # recorded as the cell's error; the sweep carries on
        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {error}"}
    Path(args[1]).write_text(json.dumps(result, sort_keys=True))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    raise SystemExit(main())
