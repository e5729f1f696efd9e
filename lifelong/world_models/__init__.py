"""World models: a latent model on any memory backbone, dynamics ensembles, model rollouts and a CEM planner."""

from lifelong.world_models.distributions import (
    TwoHotHead,
    categorical_kl,
    kl_balance,
    straight_through_sample,
    symexp,
    symlog,
    twohot_bins,
    twohot_encode,
    twohot_mean,
    unimix_log_probs,
)
from lifelong.world_models.ensemble import EnsemblePrediction, GaussianEnsemble, bootstrap_indices
from lifelong.world_models.latent import (
    LatentWorldModel,
    LatentWorldModelConfig,
    WorldModelOutput,
    make_latent_world_model,
)
from lifelong.world_models.model_env import ModelEnv
from lifelong.world_models.networks import ConvDecoder, ConvEncoder
from lifelong.world_models.planner import CEMConfig, CEMPlanner
from lifelong.world_models.returns import ReturnNormalizer, lambda_returns

__all__ = [
    "TwoHotHead", "categorical_kl", "kl_balance", "straight_through_sample", "symexp", "symlog", "twohot_bins",
    "twohot_encode", "twohot_mean", "unimix_log_probs", "EnsemblePrediction", "GaussianEnsemble",
    "bootstrap_indices", "LatentWorldModel", "LatentWorldModelConfig", "WorldModelOutput",
    "make_latent_world_model", "ModelEnv", "ConvDecoder", "ConvEncoder", "CEMConfig", "CEMPlanner",
    "ReturnNormalizer", "lambda_returns",
]
