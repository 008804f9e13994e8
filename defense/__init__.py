"""Privacy defenses for federated updates: DP-SGD, client-level and distributed DP,
diffusion-style forward noising, gradient pruning, and the accountants behind them.

The public API is what this module re-exports; the submodules are implementation detail.
"""

from phalanx.defense.accounting import ACCOUNTANTS as ACCOUNTANTS
from phalanx.defense.accounting import PrivacyAccountant as PrivacyAccountant
from phalanx.defense.accounting import epsilon_from_rdp as epsilon_from_rdp
from phalanx.defense.accounting import gaussian_epsilon as gaussian_epsilon
from phalanx.defense.client_dp import ClientLevelDP as ClientLevelDP
from phalanx.defense.client_dp import add_gaussian_noise as add_gaussian_noise
from phalanx.defense.client_dp import client_level_epsilon as client_level_epsilon
from phalanx.defense.client_dp import clip_l2 as clip_l2
from phalanx.defense.client_dp import participation_rate as participation_rate
from phalanx.defense.distributed_dp import MECHANISMS as MECHANISMS
from phalanx.defense.distributed_dp import DistributedDPGuarantee as DistributedDPGuarantee
from phalanx.defense.distributed_dp import (
    calibrate_distributed_sigma as calibrate_distributed_sigma,
)
from phalanx.defense.distributed_dp import (
    composed_distributed_epsilon as composed_distributed_epsilon,
)
from phalanx.defense.distributed_dp import distributed_dp_guarantee as distributed_dp_guarantee
from phalanx.defense.distributed_dp import distributed_dp_round_rdp as distributed_dp_round_rdp
from phalanx.defense.distributed_dp import distributed_noise_share as distributed_noise_share
from phalanx.defense.distributed_dp import integer_l2_sensitivity as integer_l2_sensitivity
from phalanx.defense.distributed_dp import sample_discrete_gaussian as sample_discrete_gaussian
from phalanx.defense.distributed_dp import sample_skellam as sample_skellam
from phalanx.defense.dpsgd import DPSGDConfig as DPSGDConfig
from phalanx.defense.dpsgd import dp_train_local as dp_train_local
from phalanx.defense.dpsgd import dpsgd_sample_rate as dpsgd_sample_rate
from phalanx.defense.forward_noise import DIFFUSION_SCHEDULES as DIFFUSION_SCHEDULES
from phalanx.defense.forward_noise import LEVEL_SCHEDULES as LEVEL_SCHEDULES
from phalanx.defense.forward_noise import ForwardNoising as ForwardNoising
from phalanx.defense.forward_noise import NoiseLevelSchedule as NoiseLevelSchedule
from phalanx.defense.forward_noise import alpha_bar_schedule as alpha_bar_schedule
from phalanx.defense.forward_noise import calibrate_forward_noising as calibrate_forward_noising
from phalanx.defense.forward_noise import denoise_forward as denoise_forward
from phalanx.defense.forward_noise import noise_multiplier_at as noise_multiplier_at
from phalanx.defense.pruning import prune_top_k as prune_top_k
from phalanx.defense.registry import DEFENSES as DEFENSES
from phalanx.defense.registry import UpdateDefense as UpdateDefense
from phalanx.defense.registry import apply_to_parameters as apply_to_parameters
from phalanx.defense.registry import parse_defense as parse_defense

__all__ = [
    "ACCOUNTANTS",
    "DEFENSES",
    "DIFFUSION_SCHEDULES",
    "LEVEL_SCHEDULES",
    "MECHANISMS",
    "ClientLevelDP",
    "DPSGDConfig",
    "DistributedDPGuarantee",
    "ForwardNoising",
    "NoiseLevelSchedule",
    "PrivacyAccountant",
    "UpdateDefense",
    "add_gaussian_noise",
    "alpha_bar_schedule",
    "apply_to_parameters",
    "calibrate_distributed_sigma",
    "calibrate_forward_noising",
    "client_level_epsilon",
    "clip_l2",
    "composed_distributed_epsilon",
    "denoise_forward",
    "distributed_dp_guarantee",
    "distributed_dp_round_rdp",
    "distributed_noise_share",
    "dp_train_local",
    "dpsgd_sample_rate",
    "epsilon_from_rdp",
    "gaussian_epsilon",
    "integer_l2_sensitivity",
    "noise_multiplier_at",
    "parse_defense",
    "participation_rate",
    "prune_top_k",
    "sample_discrete_gaussian",
    "sample_skellam",
]
