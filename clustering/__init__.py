"""Identities, cluster assignment, trust across rounds and fault-distribution analysis.

The pure part of Phalanx's clustering layer: nothing here does network I/O, sleeps or imports
`node`. `SwimMember` is the sans-I/O SWIM membership state machine that the node drives over
its transport.
"""

from clustering.analysis import ClusterAnalysis as ClusterAnalysis
from clustering.analysis import CorruptionDistribution as CorruptionDistribution
from clustering.analysis import MonteCarloEstimate as MonteCarloEstimate
from clustering.analysis import Placement as Placement
from clustering.analysis import analyze_clusters as analyze_clusters
from clustering.analysis import best_case_placement as best_case_placement
from clustering.analysis import (
    binomial_shard_corruption_probability as binomial_shard_corruption_probability,
)
from clustering.analysis import corruption_distribution as corruption_distribution
from clustering.analysis import corruption_thresholds as corruption_thresholds
from clustering.analysis import expected_corrupted_fraction as expected_corrupted_fraction
from clustering.analysis import hypergeometric_tail as hypergeometric_tail
from clustering.analysis import max_tolerated_corrupted as max_tolerated_corrupted
from clustering.analysis import monte_carlo as monte_carlo
from clustering.analysis import shard_corruption_probability as shard_corruption_probability
from clustering.analysis import worst_case_placement as worst_case_placement
from clustering.identity import BadSignatureError as BadSignatureError
from clustering.identity import IdentityError as IdentityError
from clustering.identity import NodeIdentity as NodeIdentity
from clustering.identity import NodeIdMismatchError as NodeIdMismatchError
from clustering.identity import NotAllowedError as NotAllowedError
from clustering.identity import check_allowed as check_allowed
from clustering.identity import node_id_from_public_key as node_id_from_public_key
from clustering.identity import signing_payload as signing_payload
from clustering.identity import verify as verify
from clustering.identity import verify_message as verify_message
from clustering.membership import PROTO_KIND_NAMES as PROTO_KIND_NAMES
from clustering.membership import REJECTION_ERRORS as REJECTION_ERRORS
from clustering.membership import ForgedUpdateError as ForgedUpdateError
from clustering.membership import JoinRateLimitedError as JoinRateLimitedError
from clustering.membership import MalformedMessageError as MalformedMessageError
from clustering.membership import MemberInfo as MemberInfo
from clustering.membership import MembershipError as MembershipError
from clustering.membership import MembershipEvent as MembershipEvent
from clustering.membership import MembershipMessage as MembershipMessage
from clustering.membership import MemberState as MemberState
from clustering.membership import MemberUpdate as MemberUpdate
from clustering.membership import MessageKind as MessageKind
from clustering.membership import Outgoing as Outgoing
from clustering.membership import ReplayedMessageError as ReplayedMessageError
from clustering.membership import StaleMessageError as StaleMessageError
from clustering.membership import SwimConfig as SwimConfig
from clustering.membership import SwimMember as SwimMember
from clustering.membership import WrongEpochError as WrongEpochError
from clustering.membership import WrongRecipientError as WrongRecipientError
from clustering.membership import view_digest as view_digest
from clustering.shuffle import round_key as round_key
from clustering.shuffle import shuffle_permutation as shuffle_permutation
from clustering.shuffle import shuffle_sequence as shuffle_sequence
from clustering.shuffle import shuffled_index as shuffled_index
from clustering.shuffle import unshuffled_index as unshuffled_index
from clustering.strategies import STRATEGIES as STRATEGIES
from clustering.strategies import ClusterAssignment as ClusterAssignment
from clustering.strategies import PinnedPlacement as PinnedPlacement
from clustering.strategies import assign_clusters as assign_clusters
from clustering.strategies import available_strategies as available_strategies
from clustering.strategies import cluster_sizes as cluster_sizes
from clustering.strategies import compute_assignment as compute_assignment
from clustering.strategies import register_strategy as register_strategy
from clustering.trust import DetectionQuality as DetectionQuality
from clustering.trust import SuspicionTracker as SuspicionTracker
from clustering.trust import detection_quality as detection_quality

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
