"""All four mechanics measurements on one trained model, as `reproduce`'s `mechanics` stage runs them.

The pairs it compares, from one training run:
* drift: the maze-naive model -> the trained model (the whole training, a LoRA merged into its base);
* anatomy (H3, H4): RL's own update (the model RL started from -> the trained model) when RL followed
  SFT, so the depth and rank read are RL's and not mostly SFT's; else the whole training;
* the one-step probe (H1, H2): from the model RL started from (the SFT model for `sft+rl`,
  else the naive model), where an RL step has advantages worth the name;
* recruitment (H4b): the trained v_* against the naive u_* per layer, and linear CKA of the
  naive and the trained residual stream on the same maze inputs.

Every model must be float32 (tiny drifts and one-step updates vanish in bfloat16). Writes
mechanics.json (summaries, hypotheses with verdicts, provenance), one parquet table per
measurement and mechanics.png into `out_dir`, all together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MechanicsSizes:
    """How much of each measurement `reproduce` runs (the CLI's flags of the same names). Each field's docstring is its help."""

    n_maze: int = 32
    """held-out maze episodes read on target (drift) and for CKA"""
    moves: int = 3
    """moves per maze episode"""
    n_per_set: int = 32
    """prompts per off-target set"""
    batch_size: int = 8
    """sequences per forward pass (memory, not results)"""
    probe_batches: int = 4
    """one-step probe batches: the CI's units"""
    probe_mazes: int = 2
    """mazes per probe batch"""
    probe_group: int = 4
    """episodes per maze (the GRPO group)"""
    delta: float = 0.02
    """matched on-target rise of the log-probability, nats"""
    refine: int = 2
    """secant corrections of the first-order step"""
    temperature: float = 0.7
    """sampling and RL-loss temperature (training's)"""
    micro_batch: int = 8
    """episodes per forward/backward of the one-step probe (memory, not results)"""
    top_k: int = 8
    """singular subspace size for the rotation angles"""
    n_boot: int = 2000
    """bootstrap draws of each CI"""

    def __post_init__(self) -> None:
        for name in ("n_maze", "moves", "n_per_set", "batch_size", "probe_batches", "probe_mazes", "probe_group", "micro_batch",
                     "top_k", "n_boot"):
            if getattr(self, name) < 1:
                raise ValueError(f"mechanics.{name} must be at least 1, got {getattr(self, name)}")
        if self.delta <= 0 or self.temperature <= 0 or self.refine < 0:
            raise ValueError("mechanics.delta and mechanics.temperature must be > 0 and mechanics.refine >= 0")


def _float32(*models) -> None:
    import torch

    for m in models:
        if next(m.parameters()).dtype != torch.float32:
            raise ValueError("mechanics measures in float32; load the models with dtype float32")


def measure_all(naive, trained, probe_model, tokenizer, vectors, control, maze_config, sizes: MechanicsSizes, seed: int,
                lora: bool = False, progress: bool = False, trainable_blocks: int | None = None,
                anatomy_start=None) -> tuple[dict, dict]:
    """(summaries by measurement, parquet tables by name). `probe_model` is changed and restored by the probe;
    `anatomy_start`: the model the anatomy's delta starts from (RL's start model when RL followed SFT; None: `naive`);
    `lora`: that delta is a LoRA adapter alone (H4's rank test is then not measured);
    `trainable_blocks`: how many blocks that delta could touch (LoRA on the top k blocks: k; None: all), H3's denominator."""
    from mechanics.anatomy import anatomy_summary, matrix_table, state_dict_float32
    from mechanics.drift import drift
    from mechanics.examples import example_sets, maze_examples
    from mechanics.onestep import one_step_probe, probe_summary
    from mechanics.recruitment import action_activations, cka_per_layer, recruitment_summary, vector_cosines
    from training.models import pad_token_id

    _float32(naive, trained, probe_model, *([anatomy_start] if anatomy_start is not None else []))
    s = sizes
    sets = example_sets(tokenizer, s.n_maze, s.n_per_set, seed, maze_config, s.moves)
    drift_table, drift_sum = drift(naive, trained, tokenizer, sets, s.batch_size, s.n_boot, seed)

    start = naive if anatomy_start is None else anatomy_start  # read before the probe changes probe_model
    anatomy_table = matrix_table(state_dict_float32(start), state_dict_float32(trained), s.top_k)
    anatomy_sum = {**anatomy_summary(anatomy_table, low_rank_by_construction=lora, trainable_blocks=trainable_blocks),
                   "delta": "maze-naive -> trained model" if anatomy_start is None else "RL's own update: RL's start model -> trained model"}

    cos = vector_cosines({k: vectors.get(k).numpy() for k in vectors.names}, {k: control.get(k).numpy() for k in control.names})
    layers = list(range(trained.config.num_hidden_layers))
    ex = maze_examples(tokenizer, s.n_maze, seed, maze_config, s.moves)
    acts = [action_activations(m, ex, layers, s.batch_size, pad_token_id(tokenizer)) for m in (naive, trained)]
    cka = cka_per_layer(acts[0], acts[1], layers)
    recruit_sum = recruitment_summary(cos, cka, s.n_boot, seed)

    steps, gates = one_step_probe(probe_model, tokenizer, sets, maze_config, s.probe_batches, s.probe_mazes, s.probe_group, s.moves,
                                  s.temperature, s.delta, s.refine, seed, s.micro_batch, s.batch_size, progress=progress)
    probe_sum = {"delta": s.delta, "match": "own", **probe_summary(steps, gates, s.n_boot, seed)}

    summaries = {"drift": drift_sum, "anatomy": anatomy_sum, "recruitment": recruit_sum, "onestep": probe_sum}
    tables = {"drift": drift_table, "anatomy": anatomy_table, "recruitment_cos": cos, "recruitment_cka": cka,
              "onestep": steps, "onestep_gating": gates}
    return summaries, tables


def write_all(out_dir: Path, summaries: dict, tables: dict, record: dict) -> dict:
    """mechanics.json (summaries, hypotheses, `record`: pairs and provenance), the tables and mechanics.png, written together."""
    from core.artifacts import atomic_folder, atomic_write_json, atomic_write_parquet
    from mechanics.hypotheses import evaluate

    hypotheses = [h.to_dict() for h in evaluate(summaries)]
    doc = {"summary": summaries, "hypotheses": hypotheses, **record}
    with atomic_folder(out_dir) as tmp:
        for name, frame in tables.items():
            atomic_write_parquet(tmp / f"{name}.parquet", frame, metadata={"measurement": name})
        plot(summaries, tables, tmp / "mechanics.png")
        atomic_write_json(tmp / "mechanics.json", doc)
    return doc


def plot(summaries: dict, tables: dict, path: Path) -> None:
    """Per layer: the relative weight change (anatomy); cos(v_k, u_k) and CKA(naive, trained) (recruitment)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    rel = summaries["anatomy"].get("relative_change_by_layer") or {}
    axes[0].bar(list(map(int, rel)), list(rel.values()), color="#4c72b0")
    axes[0].set(xlabel="block", ylabel="||dW|| / ||W||", title=f"update per block ({summaries['anatomy'].get('delta', '')})")
    cka = tables["recruitment_cka"]
    axes[1].plot(cka["layer"], cka["cka"], "k-", label="CKA(naive, trained), maze inputs")
    for name, g in tables["recruitment_cos"].groupby("vector"):
        axes[1].plot(g["layer"], g["cos"], marker=".", lw=1, label=f"cos(v_{name}, u_{name})")
    axes[1].axhline(0, color="grey", lw=0.5)
    axes[1].set(xlabel="layer (block input)", ylim=(-1.05, 1.05), title="recruitment")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
