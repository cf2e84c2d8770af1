"""Learning algorithms in plain PyTorch: Bradley-Terry reward fitting, SFT, and PPO.

`bt` (RM fitting), `sft` (supervised fine-tuning), `loop` (the shuffled fractional-epoch batch
schedule those two share), `ppo` (the PPO math) and `ppo_update` (`PPOLearner`, one PPO update
over a rollout batch). Each is a loop anyone can read top to bottom; none depends on Ray, so the
same code runs in-process (tests, one laptop) and inside Ray actors or Ray Train workers.
"""

from frft_ray.algorithms.bt import bt_loss, evaluate_rm, fit_reward_model, pairwise_accuracy
from frft_ray.algorithms.loop import FractionalEpochs
from frft_ray.algorithms.ppo import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    gae,
    kl_penalized_rewards,
    make_kl_controller,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    value_loss,
)
from frft_ray.algorithms.ppo_update import PPOLearner, response_forward
from frft_ray.algorithms.sft import sft_batch, sft_loss, train_sft

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "FractionalEpochs",
    "PPOLearner",
    "bt_loss",
    "entropy_from_logits",
    "evaluate_rm",
    "fit_reward_model",
    "gae",
    "kl_penalized_rewards",
    "make_kl_controller",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "pairwise_accuracy",
    "policy_loss",
    "response_forward",
    "sft_batch",
    "sft_loss",
    "train_sft",
    "value_loss",
]
