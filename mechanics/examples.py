"""The token sequences whose next-token distributions the mechanics measurements compare.

An `Example` is a token id list plus the positions whose next-token distribution is read:
* maze (on target): scripted good-policy episodes on held-out mazes (training/evaluate.py's
  EVAL_STREAM), tokenised exactly as a rollout tokenises them; read at every action position
  (the position whose next token is the direction letter). Scripted, not sampled, so the
  start and the trained model are compared on the same states;
* off target, each the set the package already ships: neutral text (probes/data, every token
  from the fourth on; the first tokens carry the attention sink), self-report questions
  (steering/prompts.WELFARE_PROMPTS), general instructions (the seeded arithmetic word
  problems of the backtracking eval) and the refusal set (benign, borderline, harmful).
  Chat prompts are read at the position after the generation prompt: the model's first reply token.
"""

from __future__ import annotations

from dataclasses import dataclass

from envs import MazeConfig, good_policy_trajectory
from training.chat import render_chat
from training.evaluate import heldout_maze_seeds
from training.rollout import ChatTokens

ON_TARGET = "maze"
OFF_TARGET_SETS = ("neutral", "self_report", "instructions", "refusal")
NEUTRAL_SKIP = 3  # the attention-sink tokens (probes/capture.py, channel_moments)


@dataclass(frozen=True)
class Example:
    """Token ids [T] and the positions (< T) whose next-token distribution is read."""

    set: str
    id: str
    ids: tuple[int, ...]
    positions: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.positions or min(self.positions) < 0 or max(self.positions) >= len(self.ids):
            raise ValueError(f"example {self.id}: read positions {self.positions} do not fit {len(self.ids)} tokens")


def maze_examples(tokenizer, n: int, seed: int = 0, maze_config: MazeConfig | None = None, n_moves: int = 3) -> list[Example]:
    """`n` scripted episodes of `n_moves` moves on held-out mazes, read before each direction letter."""
    base = maze_config or MazeConfig()
    config = MazeConfig(**{**base.to_dict(), "n_moves": n_moves})
    chat = ChatTokens(tokenizer, config.letters)
    from training.sft import episode_from_messages

    out = []
    for ms in heldout_maze_seeds(n, seed):
        tr = good_policy_trajectory(ms, seed=seed, config=config)
        ep = episode_from_messages(chat, tr.messages, tr.actions, ms)
        # The last direction token is never an input: stop one token before it, as training does.
        out.append(Example(ON_TARGET, f"maze_{ms}", tuple(ep.token_ids[:-1]), tuple(p - 1 for p in ep.action_positions)))
    return out


def chat_examples(tokenizer, name: str, items: list[tuple[str, str]]) -> list[Example]:
    """(id, user text) pairs rendered as one user turn with the generation prompt, read at the last token."""
    out = []
    for id_, text in items:
        rendered = render_chat(tokenizer, [{"role": "user", "content": text}], add_generation_prompt=True)
        ids = tuple(tokenizer(rendered, add_special_tokens=False)["input_ids"])
        out.append(Example(name, id_, ids, (len(ids) - 1,)))
    return out


def text_examples(tokenizer, name: str, texts: list[str], skip: int = NEUTRAL_SKIP, max_tokens: int = 64) -> list[Example]:
    """Plain texts (no chat template), truncated to `max_tokens`, read at every position from `skip` on."""
    out = []
    for i, text in enumerate(texts):
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens])
        start = skip if len(ids) > skip else 0
        out.append(Example(name, f"{name}_{i:03d}", ids, tuple(range(start, len(ids)))))
    return out


def off_target_examples(tokenizer, n_per_set: int | None = None, seed: int = 0) -> dict[str, list[Example]]:
    """{set name: examples} for the four off-target sets, each capped at `n_per_set` (None: all)."""
    from probes.emotion import load_neutral
    from steering.prompts import WELFARE_PROMPTS, arithmetic_problems, refusal_requests

    cap = (lambda xs: list(xs)[:n_per_set]) if n_per_set else list
    problems = arithmetic_problems(n_per_set or 40, seed)
    # Refusal rows come grouped by category: interleave so a cap keeps all three.
    rows = refusal_requests()
    by_cat = {}
    for r in rows:
        by_cat.setdefault(r["category"], []).append(r)
    mixed = [r for group in zip(*by_cat.values()) for r in group]
    return {
        "neutral": text_examples(tokenizer, "neutral", cap(load_neutral())),
        "self_report": chat_examples(tokenizer, "self_report", cap((f"welfare_{i:02d}", t) for i, t in enumerate(WELFARE_PROMPTS))),
        "instructions": chat_examples(tokenizer, "instructions", cap((p.id, p.text) for p in problems)),
        "refusal": chat_examples(tokenizer, "refusal", cap((r["id"], r["text"]) for r in mixed)),
    }


def example_sets(tokenizer, n_maze: int, n_per_set: int | None, seed: int = 0, maze_config: MazeConfig | None = None,
                 n_moves: int = 3) -> dict[str, list[Example]]:
    """The on-target maze set and the four off-target sets, as drift and the one-step probe read them."""
    return {ON_TARGET: maze_examples(tokenizer, n_maze, seed, maze_config, n_moves), **off_target_examples(tokenizer, n_per_set, seed)}
