"""Secure aggregation inside clusters: fixed-point encoding, Shamir sharing, SecAgg, secure sum.

Pure library (no I/O, no sleeping, no ``node`` import); the node drives the phase objects over
the network, and :func:`secure_sum` drives the same objects in memory.

References: Shamir, "How to share a secret", CACM 1979; Berlekamp & Welch 1986 / Gao 2003 for
Reed-Solomon decoding; Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving
Machine Learning", CCS 2017; Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic
Overhead", CCS 2020.
"""

from phalanx.mpc.crypto import Csprng as Csprng
from phalanx.mpc.crypto import KeyPair as KeyPair
from phalanx.mpc.crypto import ShareAuthenticationError as ShareAuthenticationError
from phalanx.mpc.crypto import ShareContext as ShareContext
from phalanx.mpc.crypto import decrypt_share as decrypt_share
from phalanx.mpc.crypto import encrypt_share as encrypt_share
from phalanx.mpc.crypto import prg_field_vector as prg_field_vector
from phalanx.mpc.crypto import share_key as share_key
from phalanx.mpc.encoding import FixedPointConfig as FixedPointConfig
from phalanx.mpc.encoding import decode as decode
from phalanx.mpc.encoding import decode_sum as decode_sum
from phalanx.mpc.encoding import encode as encode
from phalanx.mpc.field import PRIME as PRIME
from phalanx.mpc.messages import EncryptedShare as EncryptedShare
from phalanx.mpc.messages import KeyAdvertisement as KeyAdvertisement
from phalanx.mpc.messages import MaskedInput as MaskedInput
from phalanx.mpc.messages import PartialSum as PartialSum
from phalanx.mpc.messages import ShareRejected as ShareRejected
from phalanx.mpc.messages import UnmaskingRequest as UnmaskingRequest
from phalanx.mpc.messages import UnmaskingResponse as UnmaskingResponse
from phalanx.mpc.secagg import ProtocolViolation as ProtocolViolation
from phalanx.mpc.secagg import SecAggAggregator as SecAggAggregator
from phalanx.mpc.secagg import SecAggMember as SecAggMember
from phalanx.mpc.secagg import SecAggOutcome as SecAggOutcome
from phalanx.mpc.secure_sum import MODES as MODES
from phalanx.mpc.secure_sum import AggregatorView as AggregatorView
from phalanx.mpc.secure_sum import SecureSumResult as SecureSumResult
from phalanx.mpc.secure_sum import aggregator_view as aggregator_view
from phalanx.mpc.secure_sum import secure_sum as secure_sum
from phalanx.mpc.session import ClusterSession as ClusterSession
from phalanx.mpc.session import default_threshold as default_threshold
from phalanx.mpc.shamir import ReconstructionResult as ReconstructionResult
from phalanx.mpc.shamir import berlekamp_welch as berlekamp_welch
from phalanx.mpc.shamir import packed_length as packed_length
from phalanx.mpc.shamir import partial_sum as partial_sum
from phalanx.mpc.shamir import reconstruct as reconstruct
from phalanx.mpc.shamir import reconstruct_robust as reconstruct_robust
from phalanx.mpc.shamir import secret_points as secret_points
from phalanx.mpc.shamir import share_packed as share_packed
from phalanx.mpc.shamir import share_vector as share_vector
from phalanx.mpc.shamir_protocol import ShamirMember as ShamirMember
from phalanx.mpc.shamir_protocol import ShamirOutcome as ShamirOutcome
from phalanx.mpc.shamir_protocol import reconstruct_cluster_sum as reconstruct_cluster_sum

__all__ = [
    "MODES",
    "PRIME",
    "AggregatorView",
    "ClusterSession",
    "Csprng",
    "EncryptedShare",
    "FixedPointConfig",
    "KeyAdvertisement",
    "KeyPair",
    "MaskedInput",
    "PartialSum",
    "ProtocolViolation",
    "ReconstructionResult",
    "SecAggAggregator",
    "SecAggMember",
    "SecAggOutcome",
    "SecureSumResult",
    "ShamirMember",
    "ShamirOutcome",
    "ShareAuthenticationError",
    "ShareContext",
    "ShareRejected",
    "UnmaskingRequest",
    "UnmaskingResponse",
    "aggregator_view",
    "berlekamp_welch",
    "decode",
    "decode_sum",
    "decrypt_share",
    "default_threshold",
    "encode",
    "encrypt_share",
    "packed_length",
    "partial_sum",
    "prg_field_vector",
    "reconstruct",
    "reconstruct_cluster_sum",
    "reconstruct_robust",
    "secret_points",
    "secure_sum",
    "share_key",
    "share_packed",
    "share_vector",
]
