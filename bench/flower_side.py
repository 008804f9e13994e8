"""The Flower side of `phalanx bench flower`: run by the Python of an environment with
``flwr[simulation]`` installed, not imported by Phalanx.

    FLOWER_PYTHON bench/flower_side.py --nodes N --dim D --shares S --threshold T \
        --rounds R --mode secagg+|plain --seed SEED

Every client returns the same fixed synthetic update as a Phalanx node in
``training.mode = "synthetic"`` (learning/synthetic.py, loaded by path, so this script needs
numpy and flwr only) with weight 1. The server runs Flower's FedAvg, either plainly
(`DefaultWorkflow`) or with Flower's own `SecAggPlusWorkflow` (clients with `secaggplus_mod`),
with no evaluation. It prints one JSON object: per-round fit seconds (from the strategy's
configure_fit to the end of its aggregate_fit) and the largest deviation of each round's
aggregate from the exact mean of the synthetic updates.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SYNTHETIC = Path(__file__).resolve().parent.parent / "learning" / "synthetic.py"


def _synthetic() -> Any:
    spec = importlib.util.spec_from_file_location("phalanx_synthetic", SYNTHETIC)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--shares", type=int, default=10)
    parser.add_argument("--threshold", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", choices=("secagg+", "plain"), default="secagg+")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use")
    args = parser.parse_args(argv)

    import flwr
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    synthetic = _synthetic()
    expected = synthetic.expected_sum(args.seed, range(args.nodes), args.dim) / args.nodes
    rounds: list[dict[str, float]] = []

    class SyntheticClient(NumPyClient):  # type: ignore[misc]
        def __init__(self, index: int) -> None:
            self.update = synthetic.synthetic_update(args.seed, index, args.dim)

        def fit(self, parameters: Any, config: Any) -> tuple[list[np.ndarray], int, dict]:
            return [self.update], 1, {}

    def client_fn(context: Context) -> Any:
        return SyntheticClient(int(context.node_config["partition-id"])).to_client()

    mods = [secaggplus_mod] if args.mode == "secagg+" else []
    client_app = ClientApp(client_fn=client_fn, mods=mods)

    class TimedFedAvg(FedAvg):  # type: ignore[misc]
        started = 0.0

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            self.started = time.perf_counter()
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            aggregated, metrics = super().aggregate_fit(server_round, results, failures)
            seconds = time.perf_counter() - self.started
            error = float("inf")
            if aggregated is not None:
                value = parameters_to_ndarrays(aggregated)[0].astype(np.float64)
                error = float(np.max(np.abs(value - expected)))
            rounds.append(
                {
                    "round": server_round,
                    "fit_s": seconds,
                    "aggregate_error": error,
                    "results": len(results),
                    "failures": len(failures),
                }
            )
            return aggregated, metrics

    strategy = TimedFedAvg(
        fraction_fit=1.0,
        min_fit_clients=args.nodes,
        min_available_clients=args.nodes,
        fraction_evaluate=0.0,
        min_evaluate_clients=0,
        initial_parameters=ndarrays_to_parameters([np.zeros(args.dim, dtype=np.float32)]),
    )
    server_app = ServerApp()

    @server_app.main()  # type: ignore[misc]
    def _main(grid: Grid, context: Context) -> None:
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=args.rounds), strategy=strategy
        )
        if args.mode == "secagg+":
            workflow = DefaultWorkflow(
                fit_workflow=SecAggPlusWorkflow(
                    num_shares=args.shares,
                    reconstruction_threshold=args.threshold,
                    # every client weighs 1: the default 1000 would quantise w/1000 * params,
                    # a 1000 times coarser step
                    max_weight=1.0,
                )
            )
        else:
            workflow = DefaultWorkflow()
        workflow(grid, legacy)

    logging.getLogger("flwr").setLevel(logging.WARNING)
    started = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=args.nodes,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": args.cpus, "include_dashboard": False},
        },
    )
    print(
        json.dumps(
            {
                "flwr": flwr.__version__,
                "mode": args.mode,
                "nodes": args.nodes,
                "dim": args.dim,
                "shares": args.shares,
                "threshold": args.threshold,
                "wall_s": time.perf_counter() - started,
                "rounds": rounds,
            }
        )
    )
    return 0 if len(rounds) == args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
