"""Phalanx: decentralized federated learning that stays private and keeps learning when some
peers lie.

One import package. Its subpackages are the repository's top-level folders (``phalanx/`` holds
links to them): `phalanx.node` (the peer, its gRPC edge, the testbeds and the CLI),
`phalanx.mpc`, `phalanx.clustering`, `phalanx.adversary`, `phalanx.learning`, `phalanx.defense`,
`phalanx.deploy`, `phalanx.experiments`, `phalanx.bench`, and `phalanx.v1`, the generated
protocol messages of ``proto/phalanx/v1/node.proto``.
"""

__version__ = "0.1.0"
