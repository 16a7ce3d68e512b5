"""`welfare-axis robustness`: claim 6 as a matrix, every claim's verdict in named variants of one study config.

Each variant is a `reproduce` run in `<out>/<variant>/` (the preset, seed and `--set` overrides shared, plus the
variant's own training arm and overrides). The runs reuse each other's finished stages: a stage whose key and inputs
match a sibling's (the maze-naive evaluation and extraction in every variant with the same maze, the SFT model in
every arm that starts from it) is linked in, not run again. The matrix writes robustness.json (the variants, their
configs and claims.json rows, and claim 6's verdict under the protocol), robustness.md (claims x variants, each cell
the verdict with the rule's number and interval) and robustness.png, then rebuilds every variant's report so its
claims table's row 6 reads the matrix. Resumable: a finished variant costs only its report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from probes.protocol import PROTOCOL


@dataclass(frozen=True)
class Variant:
    """One cell column: a training arm and overrides of the study config (the keys of `reproduce --set`)."""

    name: str
    what: str
    training: str | None = None  # None: the preset's arm
    overrides: dict = field(default_factory=dict)


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("sft+rl", "the preset's arm: SFT on scripted good trajectories, then RL from the SFT model", "sft+rl"),
    Variant("sft", "SFT only (the same SFT model, no RL)", "sft"),
    Variant("tile-swap", "Gold and Mold symbols exchanged (maze.permutation=pgm): every stage re-runs", overrides={"maze.permutation": "pgm"}),
    Variant("other-algorithm", "the other RL algorithm for the RL steps: Dr. GRPO where the preset uses token-level REINFORCE "
            "(cpu-small), else REINFORCE", overrides={"train.algo": "other"}),
    Variant("rl-long", "RL continued 4x as many steps from the SFT model", overrides={"train.n_steps": "x4"}),
    Variant("full", "RL as a full fine-tune instead of LoRA", overrides={"train.finetune": "full"}),
)}
DEFAULT_VARIANTS = (PROTOCOL.claim6.reference, *PROTOCOL.claim6.required)


def check_variants(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; use any of {', '.join(VARIANTS)}")
    return list(dict.fromkeys(names))


def _overrides(variant: Variant, base: dict, preset: str) -> dict:
    """The variant's overrides on top of the user's; "xN" multiplies the preset's training value."""
    from training.config import config_from_preset

    from welfare_axis.pipeline import get_preset

    out, train = dict(base), config_from_preset(get_preset(preset).train_preset)
    for key, value in variant.overrides.items():
        current = base.get(key, getattr(train, key.partition(".")[2], None))
        if key == "train.algo" and value == "other":
            value = "dr_grpo" if current == "reinforce" else "reinforce"
        elif isinstance(value, str) and value.startswith("x"):
            value = str(int(current) * int(value[1:]))
        out[key] = value
    return out


def run_matrix(preset: str, out: str | Path, variants: list[str], seed: int = 0, overrides: dict | None = None,
               reuse: list[str | Path] | None = None, device: str = "cpu", dtype: str = "float32", progress: bool = True,
               skip: set[str] | None = None) -> Path:
    """Every variant's run (resumable, sharing stages), then the table, figure and rebuilt reports; returns robustness.md."""
    from tqdm.auto import tqdm

    from welfare_axis.pipeline import reproduce
    from welfare_axis.report import build_report

    out, names = Path(out), check_variants(variants)
    runs = {n: out / n for n in names}
    for name in tqdm(names, desc="robustness", unit="variant", disable=not progress, position=1):
        v = VARIANTS[name]
        siblings = [r for r in runs.values() if r != runs[name]] + [Path(r) for r in reuse or ()]
        reproduce(preset=preset, out=runs[name], training=v.training, seed=seed, device=device, dtype=dtype, progress=progress,
                  skip=set(skip or ()), overrides=_overrides(v, overrides or {}, preset), reuse=siblings)
    return write_matrix(out, runs, build_report)


def write_matrix(out: Path, runs: dict[str, Path], build_report) -> Path:
    """robustness.json / .md / .png from the variants' claims.json, then each variant's report again (row 6)."""
    from core.artifacts import atomic_write_json, atomic_write_text, provenance
    from welfare_axis.claims import verdict_robustness

    written = {n: json.loads((r / "report" / "claims.json").read_text()) for n, r in runs.items()}
    stale = [n for n, w in written.items() if w["protocol"] != PROTOCOL.stamp()]
    if stale:
        raise ValueError(f"variant(s) {', '.join(stale)} were judged under another protocol; rebuild their reports "
                         "(welfare-axis report RUN) first")
    learned = {n: learned_task(r) for n, r in runs.items()}
    matrix = {n: {"claims": w["claims"], "learned": learned[n]} for n, w in written.items()}
    verdict, survival = verdict_robustness(matrix)
    data = {**provenance(config={"variants": {n: VARIANTS[n].__dict__ for n in runs}}), "protocol": PROTOCOL.stamp(),
            "claim6": {"verdict": verdict, "survival": [[cid, ok] for cid, ok in survival], "status": claim6_status(written)},
            "variants": {n: {"run": str(runs[n]), "what": VARIANTS[n].what, "seed": w["seed"], "status": w["status"],
                             "trained_model": w["trained_model"], "learned": learned[n], "claims": w["claims"]}
                         for n, w in written.items()}}
    atomic_write_json(out / "robustness.json", data)
    atomic_write_text(out / "robustness.md", matrix_markdown(data))
    plot_matrix(data, out / "robustness.png")
    for r in runs.values():
        build_report(r)
    return out / "robustness.md"


def claim6_status(written: dict) -> str:
    """'exploratory' when a variant's seed informed claim 6's rule or any rule of the claims it reads, else 'confirmatory'."""
    statuses = {PROTOCOL.status(w["seed"], part="claim6") for w in written.values()}
    return "exploratory" if "exploratory" in statuses else "confirmatory"


def learned_task(run: Path) -> dict:
    """Did the variant's training learn the task? The trained model's first-move expected reward on held-out mazes minus
    the naive model's (trained_eval/comparison.json) with its CI; `learned` when the CI is above 0 (claim 6's gate).
    Either spelling of the CI keys is read (ci_lo/ci_hi, or ci_low/ci_high with diff)."""
    path = run / "trained_eval" / "comparison.json"
    if not path.exists():
        return {"learned": None, "why": "no trained_eval stage"}
    d = json.loads(path.read_text())["first_move"]["expected_reward_diff"]
    value, lo, hi = d.get("value", d.get("diff")), d.get("ci_lo", d.get("ci_low")), d.get("ci_hi", d.get("ci_high"))
    return {"value": value, "ci_lo": lo, "ci_hi": hi, "learned": bool(lo is not None and lo > 0),
            "what": "first-move expected reward, trained minus naive, held-out mazes"}


def cell(row: dict) -> str:
    """A verdict with the rule's number and interval, e.g. "not reproduced (+1.31; CI [-0.02, +0.10])"."""
    from welfare_axis.claims import _ci, _fmt

    ci = f"; CI {_ci(row['ci'])}" if row.get("ci") else ""
    return f"{row['verdict']} ({_fmt(row['value'])}{ci})"


def _learned_cell(learned: dict) -> str:
    from welfare_axis.claims import _fmt

    if learned.get("learned") is None:
        return "unknown"
    return f"{'yes' if learned['learned'] else 'no'} ({_fmt(learned['value'])}; CI [{_fmt(learned['ci_lo'])}, {_fmt(learned['ci_hi'])}])"


def matrix_markdown(data: dict) -> str:
    from welfare_axis.claims import CI_OF

    names = list(data["variants"])
    first = data["variants"][names[0]]["claims"]
    lines = [f"Protocol {data['protocol']['version']} (hash {data['protocol']['hash']}); claim 6: **{data['claim6']['verdict']}** "
             f"({data['claim6'].get('status', '?')}).",
             "", "| claim | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    by_id = {n: {r["id"]: r for r in data["variants"][n]["claims"]} for n in names}  # cells by claim id, not row position
    for c in first:
        if c["id"] == 6:
            continue
        lines.append(f"| {c['id']}. {c['claim']} | " + " | ".join(cell(by_id[n][c["id"]]) for n in names) + " |")
    lines.append("| learned the task (first-move expected reward, trained - naive) | "
                 + " | ".join(_learned_cell(data["variants"][n].get("learned") or {}) for n in names) + " |")
    lines += ["", "Each cell: the verdict, the number the rule reads (claims.json `value`) and, where the rule reads one, its "
              "interval (" + "; ".join(f"{k}: {v}" for k, v in CI_OF.items()) + ").", ""]
    lines += [f"- **{n}**: {v['what']}; trained model: {v['trained_model']} ({v['status']}, seed {v['seed']}; run {v['run']})"
              for n, v in data["variants"].items()]
    return "\n".join(lines) + "\n"


def plot_matrix(data: dict, path: Path) -> None:
    """Claims x variants, coloured by verdict, each cell's number written in it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from core.artifacts import atomic_write_png
    from welfare_axis.claims import _fmt

    names = list(data["variants"])
    rows = [c for c in data["variants"][names[0]]["claims"] if c["id"] != 6]
    order = ["reproduced", "not reproduced", "not measured", "not measurable on this model"]
    colours = ["#4caf50", "#e57373", "#bdbdbd", "#eeeeee"]
    grid = np.array([[order.index(next(c for c in data["variants"][n]["claims"] if c["id"] == r["id"])["verdict"]) for n in names]
                     for r in rows])
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(names), 0.5 * len(rows) + 1.4))
    ax.imshow(grid, cmap=matplotlib.colors.ListedColormap(colours), vmin=-0.5, vmax=len(order) - 0.5, aspect="auto")
    for i, r in enumerate(rows):
        for j, n in enumerate(names):
            ax.text(j, i, _fmt(next(c for c in data["variants"][n]["claims"] if c["id"] == r["id"])["value"]), ha="center",
                    va="center", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(rows)), [f"{r['id']}. {r['claim'][:38]}" for r in rows], fontsize=8)
    handles = [matplotlib.patches.Patch(color=c, label=o) for c, o in zip(colours, order)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, fontsize=7, frameon=False)
    ax.set_title(f"Claims x variants (claim 6: {data['claim6']['verdict']})", fontsize=9)
    fig.tight_layout()
    atomic_write_png(path, fig, dpi=130)
    plt.close(fig)
