"""Identities, cluster assignment, trust across rounds and fault-distribution analysis.

The pure part of Phalanx's clustering layer: nothing here does network I/O, sleeps or imports
`node`. `SwimMember` is the sans-I/O SWIM membership state machine that the node drives over
its transport.
"""

from phalanx.clustering.analysis import ClusterAnalysis as ClusterAnalysis
from phalanx.clustering.analysis import CorruptionDistribution as CorruptionDistribution
from phalanx.clustering.analysis import MonteCarloEstimate as MonteCarloEstimate
from phalanx.clustering.analysis import Placement as Placement
from phalanx.clustering.analysis import analyze_clusters as analyze_clusters
from phalanx.clustering.analysis import best_case_placement as best_case_placement
from phalanx.clustering.analysis import (
    binomial_shard_corruption_probability as binomial_shard_corruption_probability,
)
from phalanx.clustering.analysis import corruption_distribution as corruption_distribution
from phalanx.clustering.analysis import corruption_thresholds as corruption_thresholds
from phalanx.clustering.analysis import expected_corrupted_fraction as expected_corrupted_fraction
from phalanx.clustering.analysis import hypergeometric_tail as hypergeometric_tail
from phalanx.clustering.analysis import max_tolerated_corrupted as max_tolerated_corrupted
from phalanx.clustering.analysis import monte_carlo as monte_carlo
from phalanx.clustering.analysis import shard_corruption_probability as shard_corruption_probability
from phalanx.clustering.analysis import worst_case_placement as worst_case_placement
from phalanx.clustering.identity import BadSignatureError as BadSignatureError
from phalanx.clustering.identity import IdentityError as IdentityError
from phalanx.clustering.identity import NodeIdentity as NodeIdentity
from phalanx.clustering.identity import NodeIdMismatchError as NodeIdMismatchError
from phalanx.clustering.identity import NotAllowedError as NotAllowedError
from phalanx.clustering.identity import check_allowed as check_allowed
from phalanx.clustering.identity import node_id_from_public_key as node_id_from_public_key
from phalanx.clustering.identity import signing_payload as signing_payload
from phalanx.clustering.identity import verify as verify
from phalanx.clustering.identity import verify_message as verify_message
from phalanx.clustering.membership import PROTO_KIND_NAMES as PROTO_KIND_NAMES
from phalanx.clustering.membership import REJECTION_ERRORS as REJECTION_ERRORS
from phalanx.clustering.membership import ForgedUpdateError as ForgedUpdateError
from phalanx.clustering.membership import JoinRateLimitedError as JoinRateLimitedError
from phalanx.clustering.membership import MalformedMessageError as MalformedMessageError
from phalanx.clustering.membership import MemberInfo as MemberInfo
from phalanx.clustering.membership import MembershipError as MembershipError
from phalanx.clustering.membership import MembershipEvent as MembershipEvent
from phalanx.clustering.membership import MembershipMessage as MembershipMessage
from phalanx.clustering.membership import MemberState as MemberState
from phalanx.clustering.membership import MemberUpdate as MemberUpdate
from phalanx.clustering.membership import MessageKind as MessageKind
from phalanx.clustering.membership import Outgoing as Outgoing
from phalanx.clustering.membership import ReplayedMessageError as ReplayedMessageError
from phalanx.clustering.membership import StaleMessageError as StaleMessageError
from phalanx.clustering.membership import SwimConfig as SwimConfig
from phalanx.clustering.membership import SwimMember as SwimMember
from phalanx.clustering.membership import WrongEpochError as WrongEpochError
from phalanx.clustering.membership import WrongRecipientError as WrongRecipientError
from phalanx.clustering.membership import view_digest as view_digest
from phalanx.clustering.shuffle import round_key as round_key
from phalanx.clustering.shuffle import shuffle_permutation as shuffle_permutation
from phalanx.clustering.shuffle import shuffle_sequence as shuffle_sequence
from phalanx.clustering.shuffle import shuffled_index as shuffled_index
from phalanx.clustering.shuffle import unshuffled_index as unshuffled_index
from phalanx.clustering.strategies import STRATEGIES as STRATEGIES
from phalanx.clustering.strategies import ClusterAssignment as ClusterAssignment
from phalanx.clustering.strategies import PinnedPlacement as PinnedPlacement
from phalanx.clustering.strategies import assign_clusters as assign_clusters
from phalanx.clustering.strategies import available_strategies as available_strategies
from phalanx.clustering.strategies import cluster_sizes as cluster_sizes
from phalanx.clustering.strategies import compute_assignment as compute_assignment
from phalanx.clustering.strategies import register_strategy as register_strategy
from phalanx.clustering.trust import DetectionQuality as DetectionQuality
from phalanx.clustering.trust import SuspicionTracker as SuspicionTracker
from phalanx.clustering.trust import detection_quality as detection_quality

__all__ = [
    "PROTO_KIND_NAMES",
    "REJECTION_ERRORS",
    "STRATEGIES",
    "BadSignatureError",
    "ClusterAnalysis",
    "ClusterAssignment",
    "CorruptionDistribution",
    "DetectionQuality",
    "ForgedUpdateError",
    "IdentityError",
    "JoinRateLimitedError",
    "MalformedMessageError",
    "MemberInfo",
    "MemberState",
    "MemberUpdate",
    "MembershipError",
    "MembershipEvent",
    "MembershipMessage",
    "MessageKind",
    "MonteCarloEstimate",
    "NodeIdMismatchError",
    "NodeIdentity",
    "NotAllowedError",
    "Outgoing",
    "PinnedPlacement",
    "Placement",
    "ReplayedMessageError",
    "StaleMessageError",
    "SuspicionTracker",
    "SwimConfig",
    "SwimMember",
    "WrongEpochError",
    "WrongRecipientError",
    "analyze_clusters",
    "assign_clusters",
    "available_strategies",
    "best_case_placement",
    "binomial_shard_corruption_probability",
    "check_allowed",
    "cluster_sizes",
    "compute_assignment",
    "corruption_distribution",
    "corruption_thresholds",
    "detection_quality",
    "expected_corrupted_fraction",
    "hypergeometric_tail",
    "max_tolerated_corrupted",
    "monte_carlo",
    "node_id_from_public_key",
    "register_strategy",
    "round_key",
    "shard_corruption_probability",
    "shuffle_permutation",
    "shuffle_sequence",
    "shuffled_index",
    "signing_payload",
    "unshuffled_index",
    "verify",
    "verify_message",
    "view_digest",
    "worst_case_placement",
]
