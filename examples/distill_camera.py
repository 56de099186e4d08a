"""Recipe (b): distil a teacher into a camera policy with DAgger (behaviour cloning on the states the student
visits). The teacher is the log expert (``info["expert_action"]``) by default, or a PPO policy trained on the
privileged ``state`` (``--teacher runs/ppo_state/model.zip``, from examples/ppo_state.py). The student sees the
front camera (64 x 112) and the ego's own state, nothing privileged.

    pip install -e ".[rl]"
    python examples/distill_camera.py                          # log expert, ~2 min on 2 cores
    python examples/distill_camera.py --teacher runs/ppo_state/model.zip
"""

import argparse
import json
from pathlib import Path

from stag_sim.app import rl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, default=None, help="an SB3 PPO model on `state` (default: the log expert)")
    ap.add_argument("--steps-per-round", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("runs/distill_camera"))
    args = ap.parse_args()

    env_kwargs, teacher = {}, None
    if args.teacher is not None:
        from stable_baselines3 import PPO

        model = PPO.load(args.teacher)
        env_kwargs = {"observations": ("cameras", "ego", "state")}  # the teacher reads `state`, the student does not
        teacher = lambda obs, info: model.predict({"state": obs["state"]}, deterministic=True)[0]  # noqa: E731
    student = rl.distill(teacher, args.steps_per_round, args.rounds, env_kwargs, args.epochs)
    result = rl.evaluate(student, rl.CAMERA_ENV)
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.save({"cnn": student.cnn.state_dict(), "head": student.head.state_dict()}, args.out / "student.pt")
    (args.out / "eval.json").write_text(json.dumps(result.as_dict(), indent=1))
    print(f"camera student on held-out seeds: route completion {result.route_completion:.3f}, no collision in "
          f"{result.episodes - result.collisions}/{result.episodes}, PDMS {result.pdms:.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
