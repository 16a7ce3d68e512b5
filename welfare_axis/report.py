"""The run report (report.md + report.html), built only from the run's own files.

Every number comes from a parquet/JSON file a stage wrote; nothing is typed in.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from envs.artifacts import atomic_write_text  # noqa: E402
from welfare_axis import claims  # noqa: E402
from welfare_axis.document import Code, Figure, Heading, Para, Table, to_html, to_markdown  # noqa: E402
from welfare_axis.pipeline import STAGES  # noqa: E402

SECTIONS = ("Setup", "Training", "Claims", "Probes", "Steering", "Example steered self-reports")


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _fmt(x, nd: int = 2) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(x) else f"{x:+.{nd}f}"


# -- sections ----------------------------------------------------------------------------------
def _setup(run: Path) -> list:
    cfg = _json(run / "run_config.json")
    train = (cfg.get("config") or {}).get("train") or {}
    blocks: list = [Heading("Setup")]
    rows = []
    order = {name: i for i, name in enumerate(STAGES)}
    for marker in sorted(run.glob("*/stage.json"), key=lambda m: order.get(m.parent.name, len(order))):
        m = _json(marker)
        rows.append({"stage": m.get("name", marker.parent.name), "wall time (min)": round(m.get("wall_time", 0) / 60, 2), "finished": m.get("created", "")})
    model = cfg.get("model_info", {})
    training = cfg.get("training", "rl")
    trained_blocks, caveat = _trained_blocks(train, model.get("n_layers"), training)
    setup = pd.DataFrame(
        [
            ("preset", cfg.get("preset")),
            ("model", cfg.get("model")),
            ("model path", model.get("path")),
            ("dtype / device", f"{model.get('dtype')} / {model.get('device')}"),
            ("system prompt policy", f"{model.get('system_prompt_policy')} (default removed: {model.get('default_system_prompt_removed')})"),
            ("seed", cfg.get("seed")),
            ("package version", cfg.get("package_version")),
            ("versions", json.dumps(cfg.get("versions", {}))),
            ("layer convention", cfg.get("layer_convention")),
            ("maze", json.dumps(cfg.get("maze", {}), ensure_ascii=False)),
            ("training", _training_summary(train, training)),
            ("trained blocks", trained_blocks),
        ],
        columns=["setting", "value"],
    )
    blocks.append(Table(setup))
    if caveat:
        blocks.append(Para(caveat))
    if rows:
        blocks.append(Table(pd.DataFrame(rows), "Wall time per stage (cached stages show the time of their original run)"))
    return blocks


def _finetune(t: dict, key: str) -> str:
    return f"LoRA r{t.get('lora_r')}/alpha {t.get('lora_alpha')}" if t.get(key, "lora") == "lora" else "full fine-tune"


def _training_summary(t: dict, training: str = "rl") -> str:
    if not t:
        return "unknown"
    parts = []
    if "sft" in training:
        moves = t.get("sft_n_moves") or (t.get("maze") or {}).get("n_moves")
        parts.append(f"SFT: {_finetune(t, 'sft_finetune')}, {t.get('sft_steps')} steps x {t.get('sft_batch')} scripted "
                     f"{moves}-move trajectories, LR {t.get('sft_lr')} ({t.get('sft_schedule', 'cosine')})")
    if "rl" in training:
        algo = t.get("algo", "?") + (f" (gamma {t['gamma']})" if t.get("algo") == "reinforce" and "gamma" in t else "")
        parts.append(f"RL{' from the SFT model' if 'sft' in training else ''}: {algo}, {_finetune(t, 'finetune')}, "
                     f"{t.get('n_steps')} steps x {t.get('mazes_per_step')} mazes x {t.get('group_size')} episodes, "
                     f"LR {t.get('lr')}, T {t.get('temperature')}, entropy beta {t.get('entropy_beta')}")
    return "; then ".join(parts)


def _trained_blocks(t: dict, n_layers: int | None, training: str = "rl") -> tuple[str, str]:
    """The trained decoder blocks, and a caveat when some cannot change."""
    full = ("sft" in training and t.get("sft_finetune") == "full") or ("rl" in training and t.get("finetune") == "full")
    k = 0 if full else int(t.get("lora_top_layers") or 0)
    if not n_layers or k == 0 or k >= n_layers:
        return f"all{f' {n_layers}' if n_layers else ''}", ""
    lo = n_layers - k
    return (f"{lo}..{n_layers - 1} of 0..{n_layers - 1} (LoRA on the top {k} only)",
            f"Caveat: training changed only blocks {lo}..{n_layers - 1}. At layers below {lo} the trained "
            f"model's activations equal the naive model's, so there v_* = u_* by construction and any "
            f"claim measured at those layers compares the naive model with itself.")


def _training(run: Path, figdir: Path) -> list:
    blocks: list = [Heading("Training")]
    found = False
    for stage, cols in (("train_sft", ("loss", "accuracy", "lr")),
                        ("train_rl", ("mean_return", "golds_per_episode", "molds_per_episode", "entropy", "entropy_bonus", "loss", "lr"))):
        metrics_path = next(iter(sorted(run.glob(f"{stage}/**/metrics.parquet"))), None)
        if metrics_path is None:
            continue
        found = True
        m = pd.read_parquet(metrics_path)
        cols = [c for c in cols if c in m.columns]
        fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3), squeeze=False)
        x = m["step"] if "step" in m.columns else np.arange(len(m))
        for ax, c in zip(axes[0], cols):
            ax.plot(x, m[c], "o-", ms=3)
            ax.set_title(c.replace("_", " "))
            ax.set_xlabel("step")
        fig.tight_layout()
        path = figdir / f"{stage}_curves.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        what = "SFT" if stage == "train_sft" else "RL"
        blocks.append(Figure(path, f"{what} training curves ({len(m)} steps, from {metrics_path.relative_to(run)})"))
    if not found:
        blocks.append(Para("No training metrics in this run."))
    cmp = _json(run / "trained_eval" / "comparison.json")
    if cmp:
        rows = []
        for col in ("golds", "molds", "return"):
            c = cmp.get(col) or {}
            rows.append({"per episode": col, "naive": round(c.get("baseline", math.nan), 3), "trained": round(c.get("trained", math.nan), 3),
                         "change (paired bootstrap 95% CI)": f"{_fmt(c.get('diff'))} [{_fmt(c.get('ci_low'))}, {_fmt(c.get('ci_high'))}]",
                         "CI excludes 0": c.get("excludes_zero")})
        blocks.append(Table(pd.DataFrame(rows), f"Held-out mazes: naive vs trained policy, the same {cmp.get('n_episodes')} mazes for both"))
        fm = cmp.get("first_move") or {}
        if fm:
            naive, trained, diff = fm.get("naive", {}), fm.get("trained", {}), fm.get("expected_reward_diff", {})
            fm_rows = [
                {"first move": "Gold excess (> 0: moves toward Gold)", "naive": _pm(naive, "gold_excess"), "trained": _pm(trained, "gold_excess"), "change (95% CI)": "—"},
                {"first move": "Mold excess (< 0: avoids Mold)", "naive": _pm(naive, "mold_excess"), "trained": _pm(trained, "mold_excess"), "change (95% CI)": "—"},
                {"first move": "expected reward", "naive": _fmt(naive.get("expected_reward")), "trained": _fmt(trained.get("expected_reward")),
                 "change (95% CI)": f"{_fmt(diff.get('diff'))} [{_fmt(diff.get('ci_low'))}, {_fmt(diff.get('ci_high'))}]"},
            ]
            blocks.append(Table(pd.DataFrame(fm_rows), "Exact first-move policy on the same mazes (probabilities, no sampling): "
                                "excess = probability on Gold (Mold) directions minus their uniform share, mean ± s.e. over mazes"))
    else:
        blocks.append(Para("Held-out evaluation of the naive and trained policies is missing."))
    return blocks


def _pm(x: dict, key: str) -> str:
    """A mean with its standard error from a summarize_first_move dict, e.g. "+0.70 ± 0.02"."""
    return f"{_fmt(x.get(key))} ± {abs(float(x.get(key + '_se', math.nan))):.2f}"


def _at_l_star(at_l, l_star: dict) -> str:
    """cos(v_Mold, v_Gold) at each vector's chosen layer, e.g. "at l*: mold (layer 15) -0.73, gold (layer 11) -0.86"."""
    if not isinstance(at_l, dict) or not at_l:
        return "at l*: —"
    return "at l*: " + ", ".join(f"{k} (layer {l_star.get(k, '?')}) {_fmt(v)}" for k, v in at_l.items())


def _claims(run: Path) -> list:
    s = _json(run / "analyze" / "summary.json")
    sent = _json(run / "steer_naive" / "sentiment_summary.json")
    vectors = sent.get("vectors", sent)
    rows = []
    th = {t.claim[:2]: t for t in claims.THRESHOLDS}

    cos = s.get("cos_mold_gold") or {}
    l_star = s.get("l_star") or {}
    at_l = cos.get("at_l_star")
    ccos = s.get("control_cos_mold_gold") or {}
    null = s.get("null_band") or {}
    null_lo = min(null.get("lo", [math.nan]) or [math.nan])
    perm = s.get("perm_null_band") or {}
    perm_lo = min(perm.get("lo", [math.nan]) or [math.nan])
    v1 = claims.verdict_antiparallel(cos.get("min", math.nan), ccos.get("min", math.nan))
    rows.append((th["1."], f"min {_fmt(cos.get('min'))} at layer {cos.get('argmin', '—')}; mean {_fmt(cos.get('mean'))}; {_at_l_star(at_l, l_star)}"
                 + (f"; 95% CI of min [{_fmt(cos.get('min_ci_lo'))}, {_fmt(cos.get('min_ci_hi'))}]" if "min_ci_lo" in cos else ""),
                 f"naive u_*: min {_fmt(ccos.get('min'))}, mean {_fmt(ccos.get('mean'))}; random directions: 2.5th pct {_fmt(null_lo)}; shuffled labels: 2.5th pct {_fmt(perm_lo)}", v1))

    ll = s.get("logit_lens") or {}
    mp = (ll.get("mold") or {}).get("promoted")
    gs = (ll.get("gold") or {}).get("suppressed")
    v2 = claims.verdict_logit_lens(mp, gs)
    rows.append((th["2."], f"layer {ll.get('layer', '—')}: v_Mold promotes {', '.join(map(repr, (mp or [])[:8]))}; v_Gold suppresses {', '.join(map(repr, (gs or [])[:8]))} "
                 f"(failure words in top 20: {claims.failure_token_count((mp or [])[:20])} / {claims.failure_token_count((gs or [])[:20])})",
                 "—", v2))

    emo = s.get("emotion") or {}
    ctrl = emo.get("control") or {}
    emo_path = run / "analyze" / "emotions.parquet"
    emo_frame = pd.read_parquet(emo_path) if emo_path.exists() else None
    valence_r = ctrl_valence_r = math.nan
    if emo_frame is not None and "layer" in emo_frame.columns:
        at = emo_frame[emo_frame["layer"] == emo.get("layer")]
        valence_r = claims.valence_alignment(at[at["model"] == "trained"])
        ctrl_valence_r = claims.valence_alignment(at[at["model"] != "trained"])
    v3 = claims.verdict_emotion(emo.get("slope", math.nan), emo.get("slope_expected_by_chance", math.nan), valence_r)
    rows.append((th["3."], f"layer {emo.get('layer', '—')}: slope {_fmt(emo.get('slope'))} (chance {_fmt(emo.get('slope_expected_by_chance'))}), r {_fmt(emo.get('r'))}, valence r {_fmt(valence_r)}"
                 + (f" (slope 95% CI [{_fmt(emo.get('slope_ci_lo'))}, {_fmt(emo.get('slope_ci_hi'))}])" if "slope_ci_lo" in emo else "")
                 + f"; Gold pole: {', '.join((emo.get('gold_pole') or [])[:3])}; Mold pole: {', '.join((emo.get('mold_pole') or [])[:3])}",
                 f"naive u_*: slope {_fmt(ctrl.get('slope'))} (chance {_fmt(ctrl.get('slope_expected_by_chance'))}), valence r {_fmt(ctrl_valence_r)}", v3))

    tr = s.get("tracking") or {}
    v4 = claims.verdict_tracking(tr.get("d_gold", math.nan), tr.get("d_mold", math.nan), tr.get("control_d_gold"), tr.get("control_d_mold"))
    tl = tr.get("layer", "—")
    tl = ", ".join(f"{k} {v}" for k, v in tl.items()) if isinstance(tl, dict) else tl
    rows.append((th["4."], f"layers {tl}: Cohen's d on v_Gold {_fmt(tr.get('d_gold'))}, on v_Mold {_fmt(tr.get('d_mold'))}",
                 f"naive: d {_fmt(tr.get('control_d_gold'))} / {_fmt(tr.get('control_d_mold'))}", v4))

    def slope_txt(name):
        v = vectors.get(name) or {}
        return f"{_fmt(v.get('slope'))} [{_fmt(v.get('ci_lo'))}, {_fmt(v.get('ci_hi'))}]"

    v5 = claims.verdict_steering(vectors.get("v_mold") or vectors.get("mold"), vectors.get("v_gold") or vectors.get("gold"))
    lc = _json(run / "analyze" / "layer_choice.json")
    layer_txt = f"v_Gold at l*={lc.get('gold', '—')}, v_Mold at l*={lc.get('mold', '—')}"
    rows.append((th["5."], f"{layer_txt}: slope per unit alpha, v_Gold {slope_txt('v_gold')}, v_Mold {slope_txt('v_mold')}",
                 f"u_Gold {slope_txt('u_gold')}, u_Mold {slope_txt('u_mold')}, random {slope_txt('random_mold')}", v5))
    rows.append((th["6."], "—", "—", claims.NOT_MEASURED))
    frame = pd.DataFrame(
        [{"claim": t.claim, "paper": t.paper, "this run (metric, layer, CI)": got, "baselines": base, "threshold (stated in advance)": t.rule, "verdict": v}
         for t, got, base, v in rows]
    )
    return [Heading("Claims"), Para("Each verdict is computed by `welfare_axis/claims.py` from the threshold in its row; layers are 0-based block outputs."), Table(frame)]


def _figures(run: Path, stage: str, names: list[tuple[str, str]], title: str) -> list:
    blocks: list = [Heading(title)]
    found = False
    for fname, caption in names:
        p = run / stage / fname
        if p.exists():
            blocks.append(Figure(p, caption))
            found = True
    if not found:
        blocks.append(Para(f"No figures from the {stage} stage."))
    return blocks


def _steering(run: Path) -> list:
    blocks = _figures(run, "steer_naive", [("sentiment.png", "Self-report sentiment vs alpha (the 'X' plot), naive model, trained vectors and controls"),
                                            ("backtracking.png", "Backtracking"), ("confidence.png", "Confidence P(True)"), ("refusal.png", "Refusal rate")],
                      "Steering")
    for name in ("sentiment", "backtracking", "confidence", "refusal"):
        csv = run / "steer_naive" / f"{name}_summary.csv"
        if csv.exists():
            blocks.append(Table(pd.read_csv(csv), f"{name} (naive model, trained vectors and controls)"))
    tcsv = run / "steer_trained" / "sentiment_summary.csv"
    if tcsv.exists():
        blocks.append(Table(pd.read_csv(tcsv), "sentiment, trained model steered with its own vectors"))
    return blocks


def _examples(run: Path, per: int = 1) -> list:
    blocks: list = [Heading("Example steered self-reports")]
    path = run / "steer_naive" / "sentiment_samples.parquet"
    if not path.exists():
        return blocks + [Para("No steered samples in this run.")]
    df = pd.read_parquet(path)
    if "prompt" not in df.columns or "reply" not in df.columns:
        return blocks + [Para("Steered samples have no prompt/reply columns.")]
    welfare = df[df["prompt"].str.contains("feeling|like to be you", case=False, regex=True)]
    if welfare.empty:
        welfare = df
    prompt = welfare["prompt"].iloc[0]
    sub = df[df["prompt"] == prompt]
    lines = [f"Prompt: {prompt}"]
    vcol = "vector" if "vector" in sub.columns else None
    alphas = sorted(sub["alpha"].unique()) if "alpha" in sub.columns else [None]
    for vec in (["v_mold", "v_gold"] if vcol else [None]):
        for a in alphas:
            rows = sub
            if vcol:
                rows = rows[(rows[vcol] == vec) | ((rows["alpha"] == 0) & (a == 0))]
            if a is not None:
                rows = rows[rows["alpha"] == a]
            for _, r in rows.head(per).iterrows():
                score = f" (score {r['score']:+.1f})" if "score" in r and pd.notna(r["score"]) else ""
                lines.append(f"[{vec or ''} alpha={a}]{score} {str(r['reply']).strip()[:400]}")
    blocks.append(Code("\n\n".join(lines)))
    return blocks


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write report.md and report.html into `run_dir/report/` from the run's files."""
    run = Path(run_dir)
    out = run / "report"
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    cfg = _json(run / "run_config.json")
    blocks: list = [Heading(f"welfare-axis reproduction report — {cfg.get('preset', '?')} preset, {cfg.get('model', '?')}", 1)]
    blocks.append(Para("Reproduces Han, Chalmers & Izmailov (2026), arXiv:2605.30232. Numbers below are read from this run's parquet/JSON files."))
    blocks += _setup(run)
    blocks += _training(run, figdir)
    blocks += _claims(run)
    blocks += _figures(run, "analyze", [("cosine_by_layer.png", "cos(v_Mold, v_Gold) per layer with naive control and random-direction band"),
                                         ("layer_metrics.png", "Layer selection metrics (held-out AUROC, |d|, overlap)"),
                                         ("emotion_scatter.png", "Emotion vectors: cos with v_Gold vs cos with v_Mold"),
                                         ("tracking_hist.png", "Tracking: projections of Gold-final vs Mold-final trajectories")], "Probes")
    ll = (_json(run / "analyze" / "summary.json").get("logit_lens") or {})
    if ll:
        rows = [{"vector": f"v_{k}", "promoted": ", ".join(map(repr, v.get("promoted", [])[:12])), "suppressed": ", ".join(map(repr, v.get("suppressed", [])[:12]))}
                for k, v in ll.items() if isinstance(v, dict) and "promoted" in v]
        for k, v in (ll.get("control") or {}).items():
            if isinstance(v, dict) and "promoted" in v:
                rows.append({"vector": f"u_{k} (naive)", "promoted": ", ".join(map(repr, v["promoted"][:12])), "suppressed": ", ".join(map(repr, v.get("suppressed", [])[:12]))})
        blocks.append(Table(pd.DataFrame(rows), f"Logit lens at layer {ll.get('layer')}"))
    blocks += _steering(run)
    blocks += _examples(run)
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, to_markdown(blocks, out))
    atomic_write_text(html_path, to_html(blocks, "welfare-axis report"))
    return md_path, html_path


def claims_table_markdown(run_dir: str | Path) -> str:
    """Just the claims table, for pasting into the README."""
    return to_markdown(_claims(Path(run_dir))[2:], Path(run_dir))
