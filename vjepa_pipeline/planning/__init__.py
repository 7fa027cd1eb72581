"""Planning in latent space with an action-conditioned world model (pure PyTorch).

    model = LatentWorldModel.from_loaded(load_world_model("runs/ac"))  # or LatentWorldModel(enc, pred, 64)
    plan = cem_plan(model, model.encode(pixels)[0], state, model.encode(goal)[0], CEMConfig.vjepa2_ac())
    result = run_episode(env, model, goal_pixels, planner="cem", cfg=CEMConfig(horizon=4))

- :mod:`.world_model`: encoder + predictor as ``encode(pixels)`` / batched ``rollout(z0, s0, actions)``;
- :mod:`.energy`: L1 (V-JEPA 2-AC) / L2 distance of the predicted final latents to the goal's;
- :mod:`.cem` / :mod:`.mppi`: the planners (deterministic by seed; one batched rollout per iteration);
- :mod:`.mpc`: the closed loop over any Gymnasium environment with pixel observations, and the
  random / greedy baselines.
"""

from .cem import CEMConfig, PlanResult, cem_plan
from .energy import check_energies, goal_energy
from .mpc import (EpisodeResult, check_episode_inputs, greedy_episode, random_policy_episode, run_episode,
                  shift_plan)
from .mppi import MPPIConfig, mppi_plan
from .world_model import (STATE_UPDATES, LatentWorldModel, add_state_update, droid_pose_state_update,
                          hold_state_update)

__all__ = [
    "CEMConfig", "EpisodeResult", "LatentWorldModel", "MPPIConfig", "PlanResult", "STATE_UPDATES",
    "add_state_update", "cem_plan", "check_energies", "check_episode_inputs", "droid_pose_state_update",
    "goal_energy", "greedy_episode", "hold_state_update", "mppi_plan", "random_policy_episode", "run_episode",
    "shift_plan",
]
