"""Scenario and node configuration: TOML files validated with pydantic.

A *scenario* says what to run (data, model, training, clustering, aggregation, timeouts); a
*node config* adds who this process is (id, address, peers, output folder). Every error names the
offending field on one line (`ConfigError`), so the CLI never shows a traceback for bad input.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from phalanx.learning.data import NEEDS_DIRECTORY
from phalanx.learning.models import MODELS
from phalanx.node.defenses import DefenseConfig

MiB = 1024 * 1024


class ConfigError(ValueError):
    """A configuration problem, worded for a person: `field: what is wrong`."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    dataset: Literal["mnist5k", "digits", "mnist", "fashion-mnist", "cifar10"] = "mnist5k"
    dir: str | None = Field(default=None, description="directory with the data set's files")
    partition: Literal["iid", "dirichlet", "shards"] = "iid"
    alpha: Annotated[float, Field(gt=0)] = 0.5
    shards_per_node: Annotated[int, Field(ge=1)] = 2
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    eval_samples: Annotated[int, Field(ge=0)] = Field(
        default=0, description="evaluate on the first N test samples (0 = all)"
    )

    @model_validator(mode="after")
    def _directory_exists(self) -> DataConfig:
        if self.dataset in NEEDS_DIRECTORY:
            if not self.dir:
                raise ValueError(f"data set {self.dataset!r} needs data.dir")
            if not Path(self.dir).is_dir():
                raise ValueError(f"data.dir {self.dir!r} does not exist or is not a directory")
        return self


class ModelConfig(_Section):
    name: str = "cnn"
    synthetic_dim: Annotated[int, Field(ge=0, le=1 << 28)] = Field(
        default=0,
        description='training.mode = "synthetic": the dimension d of the fixed synthetic '
        "update (and of the model vector it is added to); 0 otherwise",
    )

    @model_validator(mode="after")
    def _known(self) -> ModelConfig:
        if self.name not in MODELS:
            raise ValueError(f"unknown model {self.name!r}; known: {', '.join(sorted(MODELS))}")
        return self


class TrainingConfig(_Section):
    mode: Literal["sgd", "synthetic"] = Field(
        default="sgd",
        description='"sgd": local SGD on the node\'s data, then evaluation. "synthetic": no '
        "training and no evaluation; every round each node contributes the same fixed update "
        "of model.synthetic_dim coordinates, drawn from the seed and the node's index "
        "(learning/synthetic.py), so that the protocol is measured alone; accuracy and loss "
        "are recorded as 0",
    )
    epochs: Annotated[int, Field(ge=1, le=1000)] = 1
    batch_size: Annotated[int, Field(ge=1)] = 32
    lr: Annotated[float, Field(gt=0)] = 0.05
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 0.0


class ClusteringConfig(_Section):
    strategy: str = "static"
    cluster_size: Annotated[int, Field(ge=1)] = 4
    publishers: Annotated[int, Field(ge=1)] = Field(
        default=2, description="members of each cluster that publish its output to all nodes"
    )
    echo: bool = Field(
        default=True,
        description="echo step: drop publishers that sent different outputs to "
        "different nodes (one all-to-all exchange of digests per round)",
    )
    dissemination: Literal["direct", "tree"] = Field(
        default="direct",
        description='how cluster outputs reach every node: "direct" (each publisher sends its '
        'output to every node) or "tree" (the publisher signs it for every node and sends it '
        "to relay_fanout peers, which forward it along a tree that rotates per output and "
        "round, so no node sends more than a few outputs; needs security.sign_messages)",
    )
    relay_fanout: Annotated[int, Field(ge=1, le=16)] = Field(
        default=2, description='peers each node forwards an output to, with dissemination = "tree"'
    )
    missing_output_suspicion: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.5,
        description="severity with which a cluster that published no output this round counts "
        "in the suspicion scores (clustering.trust): a positive pooled test, since an honest "
        "cluster always publishes (too many lying Shamir holders, a withholding or crashed "
        "publisher); 0 counts it as a negative test, like an accepted cluster. Below 1, so a "
        "liar named by Berlekamp-Welch (weight 1) outranks an honest member of a failed cluster",
    )

    @model_validator(mode="after")
    def _known_strategy(self) -> ClusteringConfig:
        from phalanx.clustering.strategies import STRATEGIES

        # locality and pinned need inputs a node does not have (RTTs, pinned Byzantine ids):
        # they serve `phalanx analyze` and the clustering API only.
        usable = sorted(set(STRATEGIES) - {"locality", "pinned"})
        if self.strategy not in usable:
            raise ValueError(
                f"unknown strategy {self.strategy!r} for nodes; known: {', '.join(usable)}"
            )
        return self


class MembershipConfig(_Section):
    """SWIM membership (`clustering.membership`) run by every node over its gRPC transport.

    ``protocol = "swim"`` runs failure detection (pings, ping-requests, suspicion with
    incarnations, piggy-backed dissemination, join through the configured peers, graceful leave);
    ``"off"`` keeps the configured peer list only. ``view`` chooses what the clusters are drawn
    from: ``"configured"`` (every configured peer; dead ones are excluded round by round by the
    phase deadlines, and every honest node has the same view by construction) or ``"swim"`` (the
    SWIM view frozen at the round's start: removed nodes are left out of the clusters; SWIM is
    only eventually consistent, see docs/architecture.md).
    """

    protocol: Literal["swim", "off"] = "swim"
    view: Literal["configured", "swim"] = "configured"
    period_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0, description="SWIM protocol period T: one probe per period"
    )
    ack_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=0.5, description="wait this long for a direct ACK before ping-requests (< T)"
    )
    indirect_probes: Annotated[int, Field(ge=0, le=16)] = 3
    suspicion_multiplier: Annotated[float, Field(gt=0, le=100)] = Field(
        default=6.0, description="a suspect is removed after mult * max(1, log10 n) * T"
    )
    settle_periods: Annotated[int, Field(ge=0, le=100)] = Field(
        default=2, description="a member enters a round's view after being alive this long"
    )
    open: bool = Field(
        default=False,
        description="accept members whose key is not in the configured peers' public keys "
        "(default: the configured keys are the allow-list)",
    )

    @model_validator(mode="after")
    def _ack_inside_period(self) -> MembershipConfig:
        if self.ack_timeout_s >= self.period_s:
            raise ValueError(
                f"ack_timeout_s ({self.ack_timeout_s}) must be below period_s ({self.period_s})"
            )
        if self.view == "swim" and self.protocol == "off":
            raise ValueError('view = "swim" needs protocol = "swim"')
        return self


class AggregationConfig(_Section):
    rule: str = "mean"
    pre: list[str] = Field(default=[], description="pre-aggregators, e.g. ['clip', 'nnm']")
    f: Annotated[int, Field(ge=0)] | Literal["auto"] | None = Field(
        default=None,
        description="faulty cluster outputs the rule is told to tolerate. Unset: the Byzantine "
        "count (0 with the mean), reduced where the rule tolerates fewer for the outputs "
        "received, which the round's record states as f_reduced. An explicit f the rule cannot "
        'tolerate for the configured clusters is refused. "auto": the most the rule tolerates '
        "for the outputs received each round",
    )
    secure: Literal["none", "secagg", "shamir"] = "none"
    threshold: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Shamir threshold t (0 = the mode's default for the cluster size)"
    )
    packing: Annotated[int, Field(ge=1)] = Field(
        default=1,
        description="shamir: coordinates per sharing polynomial (Franklin-Yung packed sharing); "
        "l > 1 cuts share bytes l-fold, keeps privacy against t - 1 colluders, and needs "
        "t + l - 1 holders to reconstruct",
    )
    clip: Annotated[float, Field(gt=0)] = Field(
        default=4.0, description="fixed-point clipping bound per coordinate (MPC modes)"
    )
    frac_bits: Annotated[int, Field(ge=0, le=30)] = Field(
        default=16, description="fixed-point fractional bits (MPC modes)"
    )


class TimeoutConfig(_Section):
    startup_s: Annotated[float, Field(gt=0)] = 120.0
    collect_s: Annotated[float, Field(gt=0)] = Field(
        default=30.0, description="how long a cluster member waits for its members' updates"
    )
    adaptive_factor: Annotated[float | None, Field(gt=1)] = Field(
        default=None,
        description="adapt the collect window to measured phase times: this multiple of the "
        "95th percentile of the longest phase of the last 20 rounds, at least "
        "adaptive_floor_s and at most collect_s (unset: collect_s in every round)",
    )
    adaptive_floor_s: Annotated[float, Field(gt=0)] = Field(
        default=2.0, description="the shortest collect window adaptive_factor may choose"
    )
    rpc_s: Annotated[float, Field(gt=0)] = 10.0
    round_period_s: Annotated[float, Field(ge=0)] = Field(
        default=0.0,
        description="pace rounds: each round lasts at least this long (0 = as fast as possible)",
    )


class LimitConfig(_Section):
    max_message_bytes: Annotated[int, Field(ge=1024)] = 256 * MiB
    mailbox_size: Annotated[int, Field(ge=1)] = 1024
    chunk_bytes: Annotated[int, Field(ge=1024, le=4 * MiB)] = 1 * MiB


class SecurityConfig(_Section):
    """How a node authenticates and admits its peers' messages (docs/security.md)."""

    sign_messages: bool = Field(
        default=True,
        description="Ed25519-sign every envelope and require peers' signatures; false exists "
        "only to measure what signing costs (it removes the sender binding without TLS)",
    )
    peer_rate_per_s: Annotated[float, Field(gt=0)] = Field(
        default=200.0,
        description="admission control: messages per second refilled in each peer's token "
        "bucket (excess is refused with RESOURCE_EXHAUSTED and counted as rate_limited)",
    )
    peer_burst: Annotated[int, Field(ge=1)] = Field(
        default=400, description="admission control: the size of each peer's token bucket"
    )
    model_request_skew_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0,
        description="how far a signed state-transfer request's timestamp may be from this "
        "node's clock",
    )


class FaultConfig(_Section):
    """A fault the testbed injects once the named nodes have recorded `round`.

    ``kill``/``restart`` act on the nodes' processes (any testbed); ``delay``, ``loss``,
    ``partition`` and ``heal`` shape the network and need ``--hosts netns``.
    """

    round: Annotated[int, Field(ge=0)]
    action: Literal["kill", "restart", "delay", "loss", "partition", "heal"]
    nodes: list[str] = []
    delay_ms: Annotated[float, Field(ge=0)] = 0.0
    jitter_ms: Annotated[float, Field(ge=0)] = 0.0
    loss_pct: Annotated[float, Field(ge=0, le=100)] = 0.0


class ByzantineConfig(_Section):
    """Which nodes deviate and how: ``behaviour`` is ``NAME[:k=v,...]`` (see adversary)."""

    behaviour: str
    count: Annotated[int, Field(ge=0)] = 0
    nodes: list[str] = []
    start_round: Annotated[int, Field(ge=1)] = 1
    omniscient: bool = False

    @model_validator(mode="after")
    def _known(self) -> ByzantineConfig:
        from phalanx.adversary.behaviours import parse_behaviour

        parse_behaviour(self.behaviour, self.start_round)
        if not self.count and not self.nodes:
            raise ValueError("byzantine entry needs count or nodes")
        return self


def tolerated_faults(scenario: Scenario) -> int | Literal["auto"]:
    """aggregation.f: as configured, else the number of Byzantine nodes (0 for the plain mean,
    which takes no f: it is the undefended baseline)."""
    aggregation = scenario.aggregation
    if aggregation.f is not None:
        return aggregation.f
    if aggregation.rule == "mean":
        return 0
    return sum(b.count + len(b.nodes) for b in scenario.byzantine)


class Scenario(_Section):
    """Everything that defines an experiment; shared by all nodes of a run."""

    name: str = "default"
    seed: int = 0
    nodes: Annotated[int, Field(ge=1, le=4096)] = 8
    rounds: Annotated[int, Field(ge=1)] = 5
    nodes_per_process: Annotated[int, Field(ge=1)] = 1
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    clustering: ClusteringConfig = ClusteringConfig()
    aggregation: AggregationConfig = AggregationConfig()
    timeouts: TimeoutConfig = TimeoutConfig()
    limits: LimitConfig = LimitConfig()
    security: SecurityConfig = SecurityConfig()
    faults: list[FaultConfig] = []
    byzantine: list[ByzantineConfig] = []
    defense: DefenseConfig = DefenseConfig()
    membership: MembershipConfig = MembershipConfig()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.clustering.cluster_size > self.nodes:
            raise ValueError(
                f"clustering.cluster_size ({self.clustering.cluster_size}) is larger than "
                f"nodes ({self.nodes})"
            )
        if self.training.mode == "synthetic":
            if self.model.synthetic_dim < 1:
                raise ValueError(
                    'training.mode = "synthetic" needs model.synthetic_dim >= 1 (the update\'s '
                    "dimension d)"
                )
            if self.defense.dpsgd or any(b.omniscient for b in self.byzantine):
                raise ValueError(
                    'training.mode = "synthetic" does not train: it cannot run DP-SGD '
                    "(defense.dpsgd) or omniscient Byzantine nodes"
                )
        elif self.model.synthetic_dim:
            raise ValueError(
                f"model.synthetic_dim = {self.model.synthetic_dim} needs "
                'training.mode = "synthetic"'
            )
        if self.clustering.dissemination == "tree" and not self.security.sign_messages:
            raise ValueError(
                'clustering.dissemination = "tree" needs security.sign_messages = true (a relayed '
                "output is trusted for its publisher's signature)"
            )
        aggregation = self.aggregation
        colluders = sum(b.count + len(b.nodes) for b in self.byzantine)
        if colluders > self.nodes:
            raise ValueError("byzantine: more Byzantine nodes than nodes")
        for entry in self.byzantine:
            from phalanx.adversary.behaviours import parse_behaviour

            spec = parse_behaviour(entry.behaviour)
            if spec.name == "inconsistent-shares" and aggregation.secure != "shamir":
                raise ValueError(
                    "byzantine: inconsistent-shares deals Shamir shares and needs "
                    'aggregation.secure = "shamir"'
                )
            if spec.is_poisoning and colluders < 2 and not entry.omniscient:
                from phalanx.adversary.poisoning import POISONING_ATTACKS

                if POISONING_ATTACKS[spec.name].needs_honest_view and spec.name != "ipm":
                    raise ValueError(
                        f"byzantine: {spec.name} estimates honest statistics from the colluders' "
                        "benign updates and needs at least 2 colluders (or omniscient = true)"
                    )
        from phalanx.clustering.strategies import cluster_sizes
        from phalanx.learning.aggregation import get_rule

        robust = get_rule(aggregation.rule, pre=aggregation.pre or None)
        outputs = len(cluster_sizes(self.nodes, self.clustering.cluster_size))
        tolerated = max(robust.max_f(outputs), 0)
        if isinstance(aggregation.f, int) and aggregation.f > tolerated:
            raise ValueError(
                f"aggregation.f = {aggregation.f} exceeds what {aggregation.rule!r} tolerates "
                f"with {outputs} cluster outputs: at most {tolerated} ({robust.breakdown}); "
                'lower aggregation.f, or set it to "auto"'
            )
        if aggregation.secure != "none":
            if self.clustering.cluster_size < 2:
                raise ValueError(
                    "clustering.cluster_size must be >= 2 when aggregation.secure is on: a "
                    "cluster of one would publish its member's update in the clear"
                )
            from phalanx.clustering.strategies import cluster_sizes
            from phalanx.mpc.encoding import FixedPointConfig

            sizes = cluster_sizes(self.nodes, self.clustering.cluster_size)
            FixedPointConfig(aggregation.clip, aggregation.frac_bits).check_no_overflow(max(sizes))
            if aggregation.threshold > min(sizes):
                raise ValueError(
                    f"aggregation.threshold ({aggregation.threshold}) exceeds the smallest "
                    f"cluster ({min(sizes)} members)"
                )
            if aggregation.packing > 1:
                if aggregation.secure != "shamir":
                    raise ValueError(
                        f"aggregation.packing = {aggregation.packing} needs aggregation.secure = "
                        f"'shamir' (secagg masks, it does not share the update)"
                    )
                from phalanx.mpc.session import default_threshold

                for size in sorted(set(sizes)):
                    t = aggregation.threshold or default_threshold("shamir", size)
                    if t + aggregation.packing - 1 > size:
                        raise ValueError(
                            f"aggregation.packing = {aggregation.packing} with threshold t = {t} "
                            f"needs t + packing - 1 = {t + aggregation.packing - 1} holders to "
                            f"reconstruct, more than a cluster of {size}"
                        )
        elif aggregation.packing > 1:
            raise ValueError(
                f"aggregation.packing = {aggregation.packing} needs aggregation.secure = 'shamir'"
            )
        return self

    @model_validator(mode="after")
    def _distributed_dp_fits_the_mpc_sum(self) -> Scenario:
        """Distributed DP hides its noise in the secure sum: refuse it without MPC, and check
        that the noisy sums of the largest cluster fit the field (`check_distributed_dp`)."""
        spec = self.defense.distributed_spec
        if spec is None:
            return self
        if self.aggregation.secure == "none":
            raise ValueError(
                "defense.distributed needs aggregation.secure = 'shamir' or 'secagg': without "
                "a secure sum every member's noise share would be seen next to its update"
            )
        from phalanx.clustering.strategies import cluster_sizes
        from phalanx.mpc.encoding import FixedPointConfig
        from phalanx.node.defenses import check_distributed_dp

        fixed_point = FixedPointConfig(self.aggregation.clip, self.aggregation.frac_bits)
        for size in sorted(set(cluster_sizes(self.nodes, self.clustering.cluster_size))):
            check_distributed_dp(spec, fixed_point, size)
        return self


class PeerConfig(_Section):
    """A configured peer: its name, where it listens, and optionally its Ed25519 public key
    (64 hex characters, raw 32 bytes). With keys, the peer's cluster outputs, echoes and
    membership messages must carry its signature, and its SWIM node id
    (``hex(SHA-256(key))[:16]``) is what the allow-list admits."""

    id: str
    address: str
    public_key: str | None = None

    @model_validator(mode="after")
    def _key_is_hex(self) -> PeerConfig:
        key = self.public_key
        if key is not None and (len(key) != 64 or any(c not in "0123456789abcdef" for c in key)):
            raise ValueError(
                f"peer {self.id}: public_key must be 64 lowercase hex characters (raw Ed25519)"
            )
        return self


class NodeSettings(_Section):
    """Who this node is and where it listens."""

    id: str
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    out_dir: str = "phalanx-out"
    insecure: bool = Field(
        default=False, description="speak plaintext gRPC (explicit opt-out of mutual TLS)"
    )
    tls_ca: str | None = Field(default=None, description="CA certificate (PEM) of the peers")
    tls_cert: str | None = Field(default=None, description="this node's certificate (PEM)")
    tls_key: str | None = Field(default=None, description="this node's private key (PEM)")
    identity_key: str | None = Field(
        default=None,
        description="Ed25519 private key (PEM) of this node's long-term identity; default "
        "OUT/keys/<id>.pem, created on first start and reused after a restart",
    )
    audit_traffic: bool = Field(
        default=False,
        description="privacy audit: save every received tensor and this node's own updates "
        "under OUT/audit/<id>/ (test and research use only)",
    )


class NodeConfig(_Section):
    """A node's file: ``[node]``, ``[[peers]]`` and the scenario sections.

    Nodes speak mutual TLS with certificates from ``phalanx certs`` (``tls_ca``, ``tls_cert``,
    ``tls_key``, or the environment variables PHALANX_TLS_CA/CERT/KEY); ``insecure = true`` is
    the explicit opt-out that the local testbed uses.
    """

    node: NodeSettings
    peers: list[PeerConfig] = []
    scenario: Scenario = Scenario()

    @model_validator(mode="after")
    def _peers_unique(self) -> NodeConfig:
        ids = [p.id for p in self.peers]
        if len(set(ids)) != len(ids):
            raise ValueError("peers: duplicate peer id")
        return self


def check_tls(node: NodeSettings) -> None:
    """Refuse to start a TLS node whose certificate files are missing (checked at start, since
    compose and Kubernetes provide them through the environment)."""
    if node.insecure:
        return
    files = tls_files(node)
    missing = [name for name, path in files.items() if not path]
    if missing:
        raise ConfigError(
            f"node {node.id}: mutual TLS needs {', '.join(missing)} (from `phalanx certs`), or "
            "insecure = true / --insecure to opt out"
        )
    for name, path in files.items():
        if not Path(str(path)).is_file():
            raise ConfigError(f"node.{name}: {path} is not a file")


def check_peer_keys(config: NodeConfig) -> None:
    """Refuse to start a node that could not attribute its peers' messages: without mutual TLS
    every peer needs a configured Ed25519 public key (nothing else would bind a message to its
    sender), and with ``security.sign_messages`` off only TLS can."""
    if not config.node.insecure:
        return
    if not config.scenario.security.sign_messages:
        raise ConfigError(
            f"node {config.node.id}: security.sign_messages = false needs mutual TLS "
            "(without TLS nothing would bind a message to its sender)"
        )
    unkeyed = sorted(p.id for p in config.peers if p.id != config.node.id and not p.public_key)
    if unkeyed:
        raise ConfigError(
            f"node {config.node.id}: without TLS every peer needs a public_key (no key for "
            f"{', '.join(unkeyed[:3])}{' ...' if len(unkeyed) > 3 else ''}); the testbed and "
            "`phalanx deploy compose` write them"
        )


def tls_files(node: NodeSettings) -> dict[str, str | None]:
    """The node's CA, certificate and key paths; the environment fills what the file leaves."""
    import os

    return {
        "tls_ca": node.tls_ca or os.environ.get("PHALANX_TLS_CA"),
        "tls_cert": node.tls_cert or os.environ.get("PHALANX_TLS_CERT"),
        "tls_key": node.tls_key or os.environ.get("PHALANX_TLS_KEY"),
    }


def _format_error(error: ValidationError, prefix: str = "") -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part != "__root__")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    where = f"{prefix}{where}" if where else prefix.rstrip(".") or "scenario"
    return f"{where}: {message}"


def parse_scenario(data: dict[str, Any]) -> Scenario:
    """Validate a scenario mapping; raises `ConfigError` naming the bad field."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_error(error)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file."""
    try:
        return parse_scenario(_read_toml(Path(path)))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def default_scenario_path() -> Path:
    return Path(__file__).parent / "scenarios" / "default.toml"


def parse_node_config(data: dict[str, Any]) -> NodeConfig:
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_error(error)) from None


def load_node_config(path: str | Path) -> NodeConfig:
    """Read a node TOML file: ``[node]``, ``[[peers]]`` and ``[scenario]`` tables."""
    try:
        return parse_node_config(_read_toml(Path(path)))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def with_overrides(scenario: Scenario, overrides: dict[str, Any]) -> Scenario:
    """A copy of `scenario` with dotted-key overrides (``{"clustering.cluster_size": 3}``)."""
    data = scenario.model_dump()
    for dotted, value in overrides.items():
        if value is None:
            continue
        target = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(target.get(part), dict):
                raise ConfigError(f"{dotted}: unknown key")
            target = target[part]
        if leaf not in target:
            raise ConfigError(f"{dotted}: unknown key")
        target[leaf] = value
    return parse_scenario(data)


def byzantine_nodes(scenario: Scenario, ids: list[str]) -> dict[str, ByzantineConfig]:
    """Which node ids are Byzantine, and how. Named nodes first; `count` more are drawn by a
    generator seeded with the scenario seed, so every process resolves the same set."""
    import random

    chosen: dict[str, ByzantineConfig] = {}
    for entry in scenario.byzantine:
        for node_id in entry.nodes:
            if node_id not in ids:
                raise ConfigError(f"byzantine.nodes: unknown node {node_id!r}")
            chosen[node_id] = entry
    rng = random.Random(f"byzantine/{scenario.seed}")
    for entry in scenario.byzantine:
        free = [i for i in sorted(ids) if i not in chosen]
        for node_id in sorted(rng.sample(free, entry.count)):
            chosen[node_id] = entry
    return dict(sorted(chosen.items()))
