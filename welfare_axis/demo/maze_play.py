"""The maze tab: a policy (the demo's model, optionally steered) or the user plays one maze move by move.

Each move shows the local view, the move, the tiles entered, the reward, and the projection of
the move's last token (the direction letter, read exactly as extraction reads it:
`render_up_to_last_assistant`, last token) onto v_Gold and v_Mold at their layers l*_k: the
tracking claim, one move at a time. Projections are read from the unsteered model.

The policy is the model's next-token distribution restricted to the four direction letters
(as in training/rollout.py), from `next_token_probs` with the steering delta; greedy at
temperature 0, else sampled from p^(1/T) with a generator seeded by (seed, move). The same
seed gives the same maze, the same wind and the same moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from envs import MazeConfig, MazeEnv
from probes.capture import capture_texts
from steering.steerer import next_token_probs
from training.chat import render_up_to_last_assistant
from training.models import check_direction_tokens
from welfare_axis.demo.service import DemoError, DemoService


@dataclass
class MazeGame:
    env: MazeEnv
    seed: int
    messages: list[dict[str, str]] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)
    done: bool = False

    def view(self) -> str:
        return self.env.render()


def maze_config(service: DemoService) -> MazeConfig:
    """The maze the vectors were extracted on (their meta), else the paper's defaults."""
    cfg = service.source.vectors.meta.get("maze_config")
    return MazeConfig(**cfg) if cfg else MazeConfig()


def new_game(service: DemoService, seed) -> MazeGame:
    from welfare_axis.demo.service import _integer

    seed = _integer(seed, "maze seed")
    env = MazeEnv(maze_config(service), render_mode="ansi")
    obs, _ = env.reset(seed=seed, options={"maze_seed": seed})
    return MazeGame(env, seed, [{"role": "user", "content": obs}])


def move_probs(service: DemoService, game: MazeGame, specs, layer: int) -> np.ndarray:
    """P(N, E, S, W) of the model after the chat so far, renormalised over the four letters."""
    tok = service.tokenizer
    try:
        dir_ids = check_direction_tokens(tok, game.env.letters)
    except Exception as e:  # ModelLoadError: letters are not single tokens for this tokenizer
        raise DemoError(str(e).splitlines()[0]) from None
    delta = service.delta(specs, layer) if specs else None
    with service.lock:
        p = next_token_probs(service.model, tok, [game.messages], None if delta is None else delta[None], layer, dir_ids)[0]
    p = p.double().numpy()
    return p / p.sum()


def play_move(service: DemoService, game: MazeGame, action: str | None = None, specs=(), layer: int | None = None,
              temperature: float = 0.0) -> dict:
    """One move: the user's `action` (a letter) or the policy's; returns the move's row for the log."""
    if game.done:
        raise DemoError("this maze is over; press 'New maze'")
    layer = service.default_layer if layer is None else service.check_layer(layer)
    probs = move_probs(service, game, list(specs), layer)
    letters = game.env.letters
    if action in (None, ""):
        if temperature > 0:
            rng = np.random.default_rng([game.seed, len(game.log)])
            w = probs ** (1.0 / temperature)
            a = int(rng.choice(4, p=w / w.sum()))
        else:
            a = int(np.argmax(probs))
        who = "policy"
    else:
        if action not in letters:
            raise DemoError(f"move must be one of {', '.join(letters)}, got {action!r}")
        a, who = letters.index(action), "you"
    game.messages.append({"role": "assistant", "content": letters[a]})
    proj = move_projections(service, game.messages)
    obs, reward, _, truncated, info = game.env.step(a)
    row = {"move": len(game.log) + 1, "by": who, "action": letters[a],
           "policy": " ".join(f"{l}:{p:.2f}" for l, p in zip(letters, probs)),
           "entered": ",".join(info["entered"]) or "-", "wind": info["wind_direction"] or "-", "reward": round(reward, 2),
           **{f"proj_{k}": round(v, 3) for k, v in proj.items()}}
    game.log.append(row)
    if truncated:
        game.done = True
    else:
        game.messages.append({"role": "user", "content": obs})
    return row


def move_projections(service: DemoService, messages) -> dict[str, float]:
    """Projection of the last direction token's residual onto v_gold and v_mold at l*_gold, l*_mold."""
    src = service.source
    out = {}
    text = render_up_to_last_assistant(service.tokenizer, messages)
    concepts = [c for c in ("gold", "mold") if c in src.vectors.names]
    layers = [src.layer_choice.get(c, service.default_layer) for c in concepts]
    with service.lock:
        acts = capture_texts(service.model, service.tokenizer, [text], layers, "last")[0]
    for j, c in enumerate(concepts):
        v = src.vectors.get(c, layers[j]).float()
        out[f"v_{c}@{layers[j]}"] = float(acts[j] @ (v / v.norm()))
    return out
