"""The Phalanx peer daemon: actor runtime, gRPC transport, round driver, config, metrics, CLI."""
