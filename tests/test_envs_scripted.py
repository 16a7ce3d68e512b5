import collections

import numpy as np
import pytest

from envs import MazeConfig, MazeEnv, good_policy_trajectory, parse_action, scripted_trajectories


@pytest.mark.parametrize("kind", ["mold", "gold", "path"])
def test_scripted_trajectories_end_on_their_class_after_path_moves(kind):
    trajs = scripted_trajectories(kind, 24, seed=3)
    assert collections.Counter(t.final_direction for t in trajs) == {0: 6, 1: 6, 2: 6, 3: 6}
    assert all(1 <= t.n_moves <= 15 for t in trajs)
    assert len({t.maze_seed for t in trajs}) == len(trajs)  # each in a fresh maze
    for t in trajs:
        # Replay without wind: every move but the last enters fresh Path, the last enters `kind`.
        env = MazeEnv(MazeConfig(wind_prob=0.0))
        env.reset(seed=t.maze_seed, options={"maze_seed": t.maze_seed})
        for i, a in enumerate(t.actions):
            _, _, _, _, info = env.step(a)
            assert info["entered"] == (["path"] if i < t.n_moves - 1 else [kind])
        roles = [m["role"] for m in t.messages]
        assert roles == ["user", "assistant"] * t.n_moves
        assert [m["content"] for m in t.messages[1::2]] == ["NESW"[a] for a in t.actions]


def test_scripted_trajectories_are_seeded():
    a = scripted_trajectories("gold", 5, seed=7)
    b = scripted_trajectories("gold", 5, seed=7)
    c = scripted_trajectories("gold", 5, seed=8)
    assert [t.messages for t in a] == [t.messages for t in b]
    assert [t.maze_seed for t in a] != [t.maze_seed for t in c]


def test_scripted_trajectories_use_the_configured_tile_set():
    t = scripted_trajectories("mold", 1, seed=0, config=MazeConfig(tile_set="letters"))[0]
    assert "📇" not in t.messages[0]["content"] and "there is Q" in t.messages[0]["content"]


def test_good_policy_beats_random_play():
    rng = np.random.default_rng(0)
    good, rand = [], []
    for seed in range(12):
        g = good_policy_trajectory(maze_seed=seed, seed=0)
        assert g.n_moves == 15
        good.append(g.golds - g.molds)
        env = MazeEnv()
        env.reset(seed=0, options={"maze_seed": seed})
        for _ in range(15):
            _, _, _, _, info = env.step(int(rng.integers(4)))
        rand.append(info["golds"] - info["molds"])
    assert np.mean(good) > np.mean(rand) + 3


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("N", 0), ("e", 1), (" S\n", 2), ("W.", 3), ("north", 0), ("East!", 1), ("**S**", 2),
        ("I will move W", 3), ("Let's go south.", 2), ("N/E/S/W", None), ("I think N or E", None),
        ("", None), ("I am not sure", None), ("A", None), ("Move to the 📐", None),
    ],
)
def test_parse_action(reply, expected):
    assert parse_action(reply) == expected


def test_parse_action_relative():
    assert parse_action("U", "relative") == 0
    assert parse_action("left", "relative") == 3
    assert parse_action("N", "relative") is None


def test_every_class_has_the_same_mix_of_final_directions_and_lengths():
    from collections import Counter

    from envs import MazeConfig

    mixes = [Counter((t.final_direction, t.n_moves) for t in scripted_trajectories(k, 16, seed=3, config=MazeConfig(size=20), max_moves=2))
             for k in ("mold", "gold", "path")]
    assert mixes[0] == mixes[1] == mixes[2] and set(mixes[0].values()) == {2}


def test_paired_states_share_every_move_but_the_last_and_balance_directions():
    from collections import Counter

    from envs import paired_trajectories

    states = paired_trajectories(48, seed=5, config=MazeConfig(size=20), max_moves=2)
    assert len(states) == 48
    for st in states:
        assert list(st) == ["mold", "gold", "path"]
        trajs = list(st.values())
        assert len({t.maze_seed for t in trajs}) == 1 and len({t.n_moves for t in trajs}) == 1
        assert len({tuple(t.actions[:-1]) for t in trajs}) == 1  # the same route to the fork
        assert len({t.final_direction for t in trajs}) == 3  # three different last letters
        for k, t in st.items():
            assert t.info["last_entered"] == [k]
        # the renders differ only after the shared route: the same user turns up to the last reply
        assert all(t.messages[:-1] == trajs[0].messages[:-1] for t in trajs)
    # 24 states per length: each class ends in each direction exactly 6 times per length
    for k in ("mold", "gold", "path"):
        mix = Counter((st[k].final_direction, st[k].n_moves) for st in states)
        assert set(mix.values()) == {6} and len(mix) == 8, k
    again = paired_trajectories(48, seed=5, config=MazeConfig(size=20), max_moves=2)
    assert [st["gold"].maze_seed for st in again] == [st["gold"].maze_seed for st in states]


def test_first_move_values_count_the_whole_episode():
    """N enters Gold at once; E enters Path, then Gold; the start tile has melted. Over one move only N is worth
    anything; over two moves N and E are worth the same, and the melted start costs a move back."""
    import numpy as np

    from envs import MazeConfig, MazeEnv
    from envs.scripted import _neighbour, first_move_values
    from envs.tiles import Tile

    cfg = MazeConfig(size=9, n_moves=2, wind_prob=0.0)
    env = MazeEnv(cfg)
    env.reset(seed=0, options={"maze_seed": 3})
    env.grid[:] = Tile.PATH
    env.pos = (4, 4)
    env.grid[4, 4] = Tile.MOLD
    north, east = _neighbour(env.pos, 0, 9), _neighbour(env.pos, 1, 9)
    env.grid[north[1], north[0]] = Tile.GOLD
    far_east = _neighbour(east, 1, 9)
    env.grid[far_east[1], far_east[0]] = Tile.GOLD
    assert np.allclose(first_move_values(env, 1), [cfg.gold_reward, 0.0, 0.0, 0.0])
    assert np.allclose(first_move_values(env, 2), [cfg.gold_reward, cfg.gold_reward, 0.0, 0.0])
    env.grid[north[1], north[0]] = Tile.PATH  # now N's best second move is a Path tile, and stepping back enters Mold
    assert first_move_values(env, 2)[0] == 0.0
