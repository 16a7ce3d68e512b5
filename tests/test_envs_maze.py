import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
from envs import MazeConfig, MazeEnv, TextActions, Tile
from envs.generator import generate_grid


def test_check_env_passes_on_registered_env():
    check_env(gym.make("WelfareMaze-v0").unwrapped, skip_render_check=False)


def test_generator_follows_the_study():
    for seed in range(5):
        grid, start = generate_grid(100, np.random.default_rng(seed))
        assert grid.shape == (100, 100)
        ring = np.concatenate([grid[0], grid[-1], grid[:, 0], grid[:, -1]])
        assert (ring == Tile.MOLD).all()
        interior = grid[1:-1, 1:-1]
        n_mold = int((interior == Tile.MOLD).sum())
        assert 0.10 <= n_mold / interior.size < 0.50
        assert int((interior == Tile.GOLD).sum()) == max(1, int(np.floor(0.2 * n_mold)))
        x, y = start
        assert grid[y, x] == Tile.PATH
        # nothing Path is strictly closer to the centre
        ys, xs = np.nonzero(grid == Tile.PATH)
        assert (np.abs(xs - 50) + np.abs(ys - 50)).min() == abs(x - 50) + abs(y - 50)


def test_observation_text_matches_the_study_format():
    env = MazeEnv()
    obs, info = env.reset(seed=3)
    pattern = (
        r"You are in a maze\. Currently, you're at location \((\d+), (\d+)\)\. "
        r"To the (north|east|south|west) there is (\S+); to the (north|east|south|west) there is (\S+); "
        r"to the (north|east|south|west) there is (\S+); to the (north|east|south|west) there is (\S+)\. "
        r"Where do you move\? Output only N/E/S/W without punctuation\."
    )
    m = re.fullmatch(pattern, obs)
    assert m, obs
    assert (int(m.group(1)), int(m.group(2))) == info["position"]
    dirs = [m.group(i) for i in (3, 5, 7, 9)]
    assert sorted(dirs) == ["east", "north", "south", "west"]
    order = ["north", "east", "south", "west"]
    assert [order.index(d) for d in dirs] == list(info["clause_order"])
    # The symbols shown are the neighbours' tiles (north = y - 1).
    tiles = env.neighbour_tiles()
    for i in (3, 5, 7, 9):
        d = order.index(m.group(i))
        assert m.group(i + 1) == env.symbols.symbol(tiles[d])
    x, y = info["position"]
    assert tiles[0] == env.grid[y - 1, x]


def test_maze_seed_option_fixes_maze_and_clause_order_across_episode_seeds():
    a, b = MazeEnv(), MazeEnv()
    obs_a, info_a = a.reset(seed=1, options={"maze_seed": 99})
    obs_b, info_b = b.reset(seed=2, options={"maze_seed": 99})
    assert obs_a == obs_b and info_a["clause_order"] == info_b["clause_order"]
    assert np.array_equal(a.grid, b.grid)
    c = MazeEnv()
    c.reset(seed=1, options={"maze_seed": 100})
    assert not np.array_equal(a.grid, c.grid)


def test_wind_message_and_both_tiles_count():
    env = MazeEnv(MazeConfig(wind_prob=1.0))
    env.reset(seed=0)
    obs, reward, _, _, info = env.step(0)
    assert info["wind"] and len(info["entered"]) == 2
    m = re.match(r"A strong wind from the (north|east|south|west) blew you (north|east|south|west)! You are in a maze", obs)
    assert m, obs
    opposite = {"north": "south", "south": "north", "east": "west", "west": "east"}
    assert opposite[m.group(1)] == m.group(2)
    assert m.group(2)[0].upper() == info["wind_direction"]
    bonus = {"gold": 20.0, "mold": -10.0, "path": 0.0}
    assert reward == pytest.approx(-0.1 + sum(bonus[t] for t in info["entered"]))


def test_relative_phrasing():
    env = TextActions(MazeEnv(MazeConfig(phrasing="relative", wind_prob=1.0)))
    obs, _ = env.reset(seed=0)
    assert "Output only U/R/D/L" in obs and "above you there is" in obs.lower()
    obs, *_ = env.step("up")
    assert re.match(r"A strong wind from (above|below|the right|the left) blew you (up|down|left|right)!", obs)


def test_invalid_moves_stay_put_cost_the_step_and_are_counted():
    env = TextActions(MazeEnv(MazeConfig(wind_prob=0.0)))
    _, info0 = env.reset(seed=5)
    for k, reply in enumerate(["I refuse", None, "N/E"], start=1):
        _, reward, _, _, info = env.step(reply)
        assert reward == pytest.approx(-0.1)
        assert info["position"] == info0["position"] and info["invalid_moves"] == k and info["action"] == "invalid"
    _, _, _, _, info = env.step("east")
    assert info["action"] == "E" and info["invalid_moves"] == 3
    with pytest.raises(ValueError):
        env.unwrapped.step(7)


def test_tile_sets_permutations_and_validation():
    assert MazeConfig().tile_symbols.as_dict() == {"path": "🧾", "mold": "📇", "gold": "📐"}
    swapped = MazeConfig(permutation="pgm").tile_symbols
    assert (swapped.mold, swapped.gold) == ("📐", "📇")
    letters = MazeConfig(tile_set="letters").tile_symbols
    assert all(len(s) == 1 and s.isalpha() for s in letters.as_dict().values())
    assert MazeConfig(tile_set="hardware").tile_symbols.path != "🧾"
    with pytest.raises(ValueError, match="unknown tile set"):
        MazeConfig(tile_set="nope")
    with pytest.raises(ValueError, match="distinct"):
        MazeConfig(symbols=("a", "b", "a"))
    with pytest.raises(ValueError, match="at least 5"):
        MazeConfig(size=4)
    with pytest.raises(ValueError, match="permutation"):
        MazeConfig(permutation="ppp")
    env = MazeEnv(MazeConfig(tile_set="letters", permutation="gmp", size=12))
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space


def test_small_grid_edges_block_moves():
    env = MazeEnv(MazeConfig(size=5, wind_prob=0.0))
    env.reset(seed=0)
    for _ in range(15):
        _, _, _, _, info = env.step(0)  # keep walking north into the edge
        x, y = info["position"]
        assert 0 <= x < 5 and 0 <= y < 5
    assert info["position"][1] == 0


bonus = {"gold": 20.0, "mold": -10.0, "path": 0.0}


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    size=st.sampled_from([5, 7, 12, 30, 100]),
    wind=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    actions=st.lists(st.one_of(st.integers(0, 3), st.none()), min_size=15, max_size=15),
)
def test_episode_properties(seed, size, wind, actions):
    cfg = MazeConfig(size=size, wind_prob=wind)
    env = TextActions(MazeEnv(cfg))
    actions = [None if a is None else "NESW"[a] for a in actions]
    obs, info = env.reset(seed=seed)
    assert obs in env.observation_space
    trace = []
    for t, a in enumerate(actions, start=1):
        obs, reward, terminated, truncated, info = env.step(a)
        assert obs in env.observation_space
        assert not terminated
        assert truncated == (t == cfg.n_moves)
        assert reward == pytest.approx(cfg.step_penalty + sum(bonus[k] for k in info["entered"]))
        x, y = info["position"]
        assert 0 <= x < size and 0 <= y < size
        assert env.unwrapped.grid[y, x] == Tile.MOLD  # the tile we stand on has melted
        trace.append((obs, reward, info["position"], tuple(info["entered"])))
    assert info["golds"] == sum(e.count("gold") for *_, e in trace)
    assert info["molds"] == sum(e.count("mold") for *_, e in trace)
    # Same seed and actions, same episode.
    env2 = TextActions(MazeEnv(cfg))
    env2.reset(seed=seed)
    trace2 = []
    for a in actions:
        obs2, r2, _, _, info2 = env2.step(a)
        trace2.append((obs2, r2, info2["position"], tuple(info2["entered"])))
    assert trace == trace2


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), actions=st.lists(st.integers(0, 3), min_size=15, max_size=15))
def test_visited_tiles_melt(seed, actions):
    env = MazeEnv(MazeConfig(size=30))
    _, info = env.reset(seed=seed)
    visited = {info["position"]}
    for a in actions:
        _, _, _, _, info = env.step(a)
        visited.add(info["position"])
        for x, y in visited:
            assert env.grid[y, x] == Tile.MOLD


def test_registered_id_and_make_kwargs():
    env = gym.make("WelfareMaze-v0", size=20, tile_set="shapes")
    obs, _ = env.reset(seed=0)
    assert "🔷" in obs or "🔶" in obs or "🔘" in obs
    assert envs.ENV_ID == "WelfareMaze-v0"


# -- Gymnasium's contract ------------------------------------------------------------------
@pytest.mark.parametrize("action", [2.7, 2.0, True, False, np.bool_(True), "N", "north", None, [1], np.array([1])])
def test_step_refuses_anything_but_a_discrete_action(action):
    env = MazeEnv()
    env.reset(seed=0)
    with pytest.raises(TypeError, match="Discrete"):
        env.step(action)
    assert env.moves == 0  # a refused action plays no turn


@pytest.mark.parametrize("action", [-1, 4, np.int64(7)])
def test_step_refuses_out_of_range_ints(action):
    env = MazeEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="0..3"):
        env.step(action)


def test_step_takes_python_and_numpy_ints_alike():
    results = []
    for a in (2, np.int64(2), np.int32(2), np.uint8(2), np.array(2)):
        env = MazeEnv()
        env.reset(seed=7)
        obs, reward, _, _, info = env.step(a)
        results.append((obs, reward, info["position"], info["action"]))
    assert all(r == results[0] for r in results) and results[0][3] == "S"
    env = MazeEnv()
    env.reset(seed=0)
    env.step(env.action_space.sample())


def test_step_after_truncation_raises_a_clear_error():
    env = MazeEnv(MazeConfig(size=12, n_moves=3))
    env.reset(seed=0)
    for t in range(3):
        *_, truncated, _ = env.step(t % 4)
    assert truncated
    with pytest.raises(RuntimeError, match=r"episode is over.*reset\(\)"):
        env.step(0)
    with pytest.raises(RuntimeError, match="episode is over"):
        TextActions(env).step("N")
    env.reset(seed=1)  # a new episode plays again
    env.step(0)


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError, match="reset"):
        MazeEnv().step(0)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"maze_sed": 3}, ValueError, "unknown reset option.*maze_sed.*maze_seed"),
        ({"maze_seed": 3, "wind": 0.5}, ValueError, "unknown reset option"),
        ({"maze_seed": "3"}, TypeError, "maze_seed"),
        ({"maze_seed": 3.0}, TypeError, "maze_seed"),
        ({"maze_seed": True}, TypeError, "maze_seed"),
        ({"maze_seed": -1}, ValueError, "maze_seed"),
        ([("maze_seed", 3)], TypeError, "options"),
        ("maze_seed", TypeError, "options"),
    ],
)
def test_reset_validates_its_options(options, error, match):
    env = MazeEnv()
    with pytest.raises(error, match=match):
        env.reset(seed=0, options=options)


def test_reset_takes_numpy_maze_seeds_and_none():
    a, b, c = MazeEnv(), MazeEnv(), MazeEnv()
    obs_a, _ = a.reset(seed=0, options={"maze_seed": 42})
    obs_b, _ = b.reset(seed=0, options={"maze_seed": np.int64(42)})
    assert obs_a == obs_b and np.array_equal(a.grid, b.grid)
    obs_c, info_c = c.reset(seed=0, options={"maze_seed": None})
    assert obs_c == MazeEnv().reset(seed=0)[0] and isinstance(info_c["maze_seed"], int)
    MazeEnv().reset(seed=0, options={})


def test_text_actions_plays_replies_like_the_discrete_env():
    """Same seed: a parsed reply plays exactly the discrete action; an unparseable one is the invalid move."""
    replies = ["N", "east.", "I go South", "w", "N/E", "", "I refuse", "up", "West!", "north", None, "E", "S", "n", "s"]
    for seed in range(4):
        text = TextActions(MazeEnv(MazeConfig(size=12, wind_prob=0.5)))
        plain = MazeEnv(MazeConfig(size=12, wind_prob=0.5))
        assert text.reset(seed=seed)[0] == plain.reset(seed=seed)[0]
        for reply in replies:
            direction = None if reply is None else envs.parse_action(reply)
            got = text.step(reply)
            want = plain.step_invalid() if direction is None else plain.step(direction)
            assert got == want
            assert got[4]["invalid"] == (direction is None)
    assert isinstance(text.action_space, gym.spaces.Text) and text.letters == ("N", "E", "S", "W")
    with pytest.raises(TypeError, match="reply"):
        text.step(1)


def test_text_actions_uses_the_relative_letters():
    env = TextActions(MazeEnv(MazeConfig(phrasing="relative", wind_prob=0.0)))
    env.reset(seed=0)
    assert env.step("U")[4]["action"] == "U"
    assert env.step("N")[4]["invalid"]


def test_text_actions_wraps_only_the_maze():
    with pytest.raises(TypeError, match="MazeEnv"):
        TextActions(gym.make("CartPole-v1"))
    env = TextActions(gym.make("WelfareMaze-v0", size=12))
    env.reset(seed=0)
    assert env.step("N")[4]["action"] == "N"


def test_class_docstring_states_the_rules():
    """The spec lives with the code, in the sections Gymnasium's toy-text envs use."""
    doc = MazeEnv.__doc__
    for section in ("## Description", "## Action Space", "## Observation Space", "## Starting State", "## Rewards",
                    "## Episode End", "## Information", "## Arguments"):
        assert section in doc, section
    cfg = MazeConfig()
    for fact in (f"{cfg.size}x{cfg.size}", f"{cfg.n_moves} moves", f"{cfg.gold_reward:+g}", f"{cfg.mold_reward:+g}",
                 f"{cfg.step_penalty:+g}", f"{cfg.wind_prob:.0%}", "Discrete(4)", "melt", "A strong wind from",
                 "TextActions", "maze_seed", "invalid_moves", "truncated", "RuntimeError", "outer ring",
                 "nearest the centre", "max(1, floor(0.2"):
        assert fact in doc, fact
