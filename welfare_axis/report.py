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

from core.artifacts import atomic_write_json, atomic_write_png, atomic_write_text, provenance  # noqa: E402
from core.stats import excludes_zero  # noqa: E402
from probes.protocol import PROTOCOL  # noqa: E402
from steering.catalog import EVAL_NAMES  # noqa: E402
from welfare_axis import claims  # noqa: E402
from welfare_axis.document import Code, Figure, Heading, Para, Table, to_html, to_markdown  # noqa: E402
from welfare_axis.stages import STAGES  # noqa: E402

SECTIONS = ("Setup", "Training", "Claims", "Probes", "Steering", "Mechanics", "Example steered self-reports")


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
            ("concept vectors", _extraction_summary(run)),
        ],
        columns=["setting", "value"],
    )
    blocks.append(Table(setup))
    if caveat:
        blocks.append(Para(caveat))
    if rows:
        blocks.append(Table(pd.DataFrame(rows), "Wall time per stage (cached stages show the time of their original run)"))
    return blocks


def _extraction_summary(run: Path) -> str:
    """Trajectories per class behind v_* and u_* (each extraction stage's own record)."""
    parts = []
    for stage, name in (("extract_trained", "v_*"), ("extract_naive", "u_* (naive)")):
        s = _json(run / stage / "stage.json").get("summary") or {}
        if s.get("n_per_class"):
            unit = "maze states" if s.get("design") == "paired" else "scripted trajectories"
            moves = f"1-{s['max_moves']}-move" if s.get("max_moves") and s["max_moves"] > 1 else "1-move" if s.get("max_moves") == 1 else ""
            parts.append(f"{name}: {s['n_per_class']} {moves + ' ' if moves else ''}{unit} per class")
    return "; ".join(parts) or "—"


def _finetune(t: dict, key: str) -> str:
    return f"LoRA r{t.get('lora_r')}/alpha {t.get('lora_alpha')}" if t.get(key, "lora") == "lora" else "full fine-tune"


def _training_summary(t: dict, training: str = "rl") -> str:
    if training.startswith("plant:"):
        return f"none: a {training.split(':', 1)[1]} axis planted into the naive model (see the plant stage; the pipeline's control)"
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
    if training.startswith("plant:"):
        return "none (no weights change; the plant adds its axis at one layer)", ""
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
        atomic_write_png(path, fig, dpi=110)
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
                         "change (paired bootstrap 95% CI)": f"{_fmt(c.get('value'))} [{_fmt(c.get('ci_lo'))}, {_fmt(c.get('ci_hi'))}]",
                         "CI excludes 0": excludes_zero(c) if "ci_lo" in c else None})
        blocks.append(Table(pd.DataFrame(rows), f"Held-out mazes: naive vs trained policy ({_arm(run)}), the same "
                            f"{cmp.get('n_episodes')} mazes for both"))
        fm = cmp.get("first_move") or {}
        if fm:
            naive, trained, diff = fm.get("naive", {}), fm.get("trained", {}), fm.get("expected_reward_diff", {})
            fm_rows = [
                {"first move": "Gold excess (> 0: moves toward Gold)", "naive": _pm(naive, "gold_excess"), "trained": _pm(trained, "gold_excess"), "change (95% CI)": "—"},
                {"first move": "Mold excess (< 0: avoids Mold)", "naive": _pm(naive, "mold_excess"), "trained": _pm(trained, "mold_excess"), "change (95% CI)": "—"},
                {"first move": "expected reward", "naive": _fmt(naive.get("expected_reward")), "trained": _fmt(trained.get("expected_reward")),
                 "change (95% CI)": f"{_fmt(diff.get('value'))} [{_fmt(diff.get('ci_lo'))}, {_fmt(diff.get('ci_hi'))}]"},
            ]
            blocks.append(Table(pd.DataFrame(fm_rows), f"Exact first-move policy of the naive and the trained ({_arm(run)}) model on "
                                "the same mazes (probabilities, no sampling): "
                                "excess = probability on Gold (Mold) directions minus their uniform share, mean ± s.e. over mazes"))
    else:
        blocks.append(Para("Held-out evaluation of the naive and trained policies is missing."))
    return blocks


def _pm(x: dict, key: str) -> str:
    """A mean with its standard error from a summarize_first_move dict, e.g. "+0.70 ± 0.02"."""
    return f"{_fmt(x.get(key))} ± {abs(float(x.get(key + '_se', math.nan))):.2f}"


def claim_results(run: Path) -> list:
    """The claims of this run, from analyze/summary.json and the steering stage's claim inputs."""
    steering = _json(run / "steer_naive" / "axis_claim.json") or None
    behaviours = _json(run / "steer_behaviours" / "behaviour_claims.json") or None
    return claims.evaluate(_json(run / "analyze" / "summary.json"), steering, behaviours=behaviours, robustness=robustness_matrix(run))


def robustness_matrix(run: Path) -> dict | None:
    """{variant: {"claims": claims.json rows, "learned": ...}} of the robustness matrix this run is a variant of
    (`<matrix>/<variant>/`), else None."""
    data = _json(run.parent / "robustness.json")
    variants = data.get("variants") or {}
    if run.name not in variants:
        return None
    return {name: {"claims": v["claims"], "learned": v.get("learned")} for name, v in variants.items()}


def trained_history(cfg: dict) -> str:
    """The trained model's history in one line, from run_config.json (which arm, how many steps, algorithm, LoRA or full)."""
    training = cfg.get("training", "?")
    if str(training).startswith("plant:"):
        return f"no training: a {training.split(':', 1)[1]} axis planted into the naive model (a control run)"
    t = (cfg.get("config") or {}).get("train") or {}
    parts = []
    if "sft" in training:
        parts.append(f"SFT {t.get('sft_steps', '?')} steps ({t.get('sft_finetune', '?')} fine-tune, LR {t.get('sft_lr', '?')})")
    if "rl" in training:
        lora = f"LoRA r{t.get('lora_r', '?')}" if t.get("finetune") == "lora" else "full fine-tune"
        parts.append(f"then RL {t.get('n_steps', '?')} steps ({t.get('algo', '?')}, {lora}, LR {t.get('lr', '?')})" if parts
                     else f"RL {t.get('n_steps', '?')} steps ({t.get('algo', '?')}, {lora}, LR {t.get('lr', '?')})")
    return f"{training}: " + " ".join(parts)


def _arm(run: Path) -> str:
    """The trained model's arm and history, for the title of every table that reports it."""
    return trained_history(_json(run / "run_config.json"))


def verdict_header(run: Path) -> dict:
    """What claims.json and the report's claims section say about how to read the verdicts."""
    cfg = _json(run / "run_config.json")
    seed = int(cfg.get("seed", 0) or 0)
    plant = str(cfg.get("training", "")).split(":", 1)[1] if str(cfg.get("training", "")).startswith("plant:") else None
    return {"protocol": PROTOCOL.stamp(), "seed": seed, "status": PROTOCOL.status(seed, plant), "trained_model": trained_history(cfg),
            "model": cfg.get("model"), "preset": cfg.get("preset")}


def _claims(run: Path) -> list:
    head = verdict_header(run)
    frame = pd.DataFrame(
        [{"claim": f"{r.id}. {r.claim}", "paper": t.paper, "this run (metric, layer, CI)": r.measured, "controls": r.controls,
          "rule (protocol)": r.threshold, "verdict": r.verdict, "caveat": r.caveat or "—"}
         for r, t in zip(claim_results(run), claims.THRESHOLDS)]
    )
    return [Heading("Claims"), Para(f"Protocol {head['protocol']['version']} (hash {head['protocol']['hash']}; docs/protocol.md); seed "
                                    f"{head['seed']}: **{head['status']}** verdicts. Trained model: {head['trained_model']}. Each verdict "
                                    "is computed by `welfare_axis/claims.py` from the protocol's rule in its row and written to "
                                    "report/claims.json; layers are 0-based block inputs (layer 0 = embeddings; the last block's "
                                    "output is never a layer)."), Table(frame)]


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


def axis_figure(run: Path, figdir: Path) -> list:
    """Claim 5's primary per band layer: the welfare axis's and the positive control's log-odds derivative, with each
    null family's 2.5-97.5% band (axis_layers.parquet of steer_naive); the selected layer dotted."""
    path, claim = run / "steer_naive" / "axis_layers.parquet", _json(run / "steer_naive" / "axis_claim.json")
    if not path.exists() or not claim:
        return []
    df = pd.read_parquet(path)
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for fam, colour in (("shuffled", "tab:orange"), ("covariance", "tab:green"), ("isotropic", "tab:gray")):
        ax.fill_between(df["layer"], df[f"{fam}_2.5"], df[f"{fam}_97.5"], alpha=0.18, color=colour, label=f"{fam} nulls 95%")
    ax.plot(df["layer"], df["axis_effect"], "o-", color="tab:blue", label="welfare axis unit(v_Gold) - unit(v_Mold)")
    ax.plot(df["layer"], df["valence_effect"], "s--", color="tab:purple", label="valence positive control")
    ax.axvline((claim.get("axis") or {}).get("layer", np.nan), ls=":", color="k")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(xlabel="layer (block input)", ylabel="d log-odds / d alpha", title="Claim 5: sentiment log-odds derivative per unit alpha")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out = figdir / "axis_layers.png"
    atomic_write_png(out, fig, dpi=110)
    plt.close(fig)
    return [Figure(out, "Claim 5's primary statistic per band layer against each null family (the verdict reads the maximum z "
                        "over the band, family-wise); the dotted line is the selected layer")]


def _steering(run: Path, figdir: Path | None = None) -> list:
    blocks = _figures(run, "steer_naive", [("screen.png", "Steering screen over layers (teacher-forced log-odds, prompt half a): v_*, u_*, "
                                            "the valence positive control and the random directions' 95% band; the dotted line is the chosen layer"),
                                           ("sentiment.png", "Self-report sentiment vs alpha (the 'X' plot) at the chosen layer, prompt half b, "
                                            "naive model, trained vectors and controls"),
                                           ("l_star/sentiment.png", "The same at l*"),
                                            ("backtracking.png", "Backtracking"), ("confidence.png", "Confidence P(True)"), ("refusal.png", "Refusal rate")],
                      "Steering")
    if figdir is not None:
        blocks[1:1] = axis_figure(run, figdir)
    for name in EVAL_NAMES:
        csv = run / "steer_naive" / f"{name}_summary.csv"
        if csv.exists():
            blocks.append(Table(pd.read_csv(csv), f"{name} (naive model; vectors of the trained model, {_arm(run)}; and controls)"))
    tcsv = run / "steer_trained" / "sentiment_summary.csv"
    if tcsv.exists():
        blocks.append(Table(pd.read_csv(tcsv), f"sentiment, trained model ({_arm(run)}) steered with its own vectors"))
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


def _mechanics(run: Path) -> list:
    """Hypotheses H1-H4 of the mechanics stage (mechanics/hypotheses.py), the drift ratio and the figure."""
    blocks: list = [Heading("Mechanics")]
    m = _json(run / "mechanics" / "mechanics.json")
    if not m:
        why = "a planted axis has no training to dissect" if (_json(run / "run_config.json").get("training") or "").startswith("plant") \
            else "the stage did not run"
        blocks.append(Para(f"Not measured: {why}."))
        return blocks
    pairs = m.get("pairs") or {}
    da = pairs.get("drift") or pairs.get("drift_and_anatomy") or {}
    an = pairs.get("anatomy") or {"start": da.get("start")}
    anatomy = ("the maze-naive model" if an.get("start") == da.get("start") else f"the model RL started from ({an.get('start')}): RL's own update")
    blocks.append(Para(f"Drift compares the maze-naive model with the trained model ({da.get('trained')}"
                       f"{' + ' + str(da.get('checkpoint')) if da.get('checkpoint') else ''}); the update anatomy (H3, H4) starts from "
                       f"{anatomy}; the one-step probe starts from the model RL "
                       f"started from ({pairs.get('onestep_start')}); recruitment compares the trained v_* with the naive u_*. "
                       "Thresholds stated in advance in mechanics/hypotheses.py; supported / contradicted when the CI lies wholly on one side "
                       "of the threshold, inconclusive when it contains it; all in float32."))
    rows = [{"": h["id"], "prediction": h["prediction"], "measurement": h["measurement"],
             "value [95% CI]": f"{_fmt(h['value'], 3)} [{_fmt(h['ci_lo'], 3)}, {_fmt(h['ci_hi'], 3)}]",
             "threshold": f"{h['direction']} {h['threshold']:g}", "verdict": h["verdict"]} for h in m.get("hypotheses", [])]
    if rows:
        blocks.append(Table(pd.DataFrame(rows), f"Hypotheses behind 'RL recruits what is already there' (trained model: {_arm(run)})"))
    d = (m.get("summary") or {}).get("drift") or {}
    kl = d.get("kl_by_set") or {}
    if kl:
        r = d.get("ratio_off_to_on") or {}
        rows = [{"set": name, "mean KL (nats)": f"{v['value']:.4f} [{v['ci_lo']:.4f}, {v['ci_hi']:.4f}]"} for name, v in kl.items()]
        blocks.append(Table(pd.DataFrame(rows), f"Drift {d.get('kl_direction', '')}; off-target / on-target ratio "
                            f"{_fmt(r.get('value'), 3)} [{_fmt(r.get('ci_lo'), 3)}, {_fmt(r.get('ci_hi'), 3)}]"))
    if (run / "mechanics" / "mechanics.png").exists():
        blocks.append(Figure(run / "mechanics" / "mechanics.png", "Relative weight change per block; cos(v_k, u_k) and linear CKA of "
                             "the naive and trained residual streams per layer (raw space)"))
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
    blocks += _figures(run, "analyze", [("cosine_by_layer.png", "cos(v_Mold, v_Gold) per layer in each space, with the naive "
                                         "control, the shuffled-label band and the layer chosen on half A (cosine on half B)"),
                                         ("layer_metrics.png", "Layer metrics per space: held-out AUROC, |d|, overlap, split-half reliability, "
                                          "share of ||v||^2 in the top 5 channels"),
                                         ("logit_lens.png", "Logit lens: failure score per layer, trained vs naive vs random directions"),
                                         ("emotion_scatter.png", "Emotion vectors (naive model): cos with v_Gold vs cos with v_Mold"),
                                         ("tracking_hist.png", "Tracking: projections of Gold-final vs Mold-final trajectories")], "Probes")
    blocks += _probe_tables(_json(run / "analyze" / "summary.json"))
    blocks += _steering(run, figdir)
    blocks += _mechanics(run)
    blocks += _examples(run)
    atomic_write_json(out / "claims.json", {**provenance(config={"run": str(run)}), **verdict_header(run),
                                            "claims": [r.to_dict() for r in claim_results(run)]})
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, to_markdown(blocks, out))
    atomic_write_text(html_path, to_html(blocks, "welfare-axis report"))
    return md_path, html_path


def _probe_tables(s: dict) -> list:
    """Reliability and outlier channels at the chosen layers, and the logit lens at the paper's layer."""
    if not s:
        return []
    blocks: list = []
    rel, share = s.get("split_half_reliability") or {}, (s.get("outlier_channels") or {}).get("top5_share") or {}
    rows = []
    for k, layer in (s.get("l_star") or {}).items():
        r = rel.get(k) or {}
        rows.append({"vector": f"v_{k}", f"l* ({s.get('verdict_space')} rule)": layer,
                     **{f"split-half cos, {sp}": _fmt((r.get(sp) or [math.nan] * (layer + 1))[layer]) for sp in r},
                     "top-5-channel share of ||v||^2": _fmt((share.get(f"v_{k}") or [math.nan] * (layer + 1))[layer]),
                     **_projected_n(s, k)})
    if rows:
        blocks.append(Table(pd.DataFrame(rows), "Reliability (cos of vectors from two halves of the mazes, mean over random splits "
                            "with their range; >= 0.9 wanted) and outlier "
                            f"channels at l*; verdicts use the {s.get('verdict_space')} space because {s.get('why_verdict_space')}"))
    ll = s.get("logit_lens") or {}
    at = ll.get("at_layer") or {}
    if at:
        rows = [{"vector": name, "failure score": _fmt(r.get("failure_score")), "z vs random": _fmt(r.get("z")),
                 "promoted (by cosine)": ", ".join(map(repr, json.loads(r.get("promoted") or "[]")[:10])),
                 "suppressed": ", ".join(map(repr, json.loads(r.get("suppressed") or "[]")[:10]))} for name, r in at.items()]
        blocks.append(Table(pd.DataFrame(rows), f"Logit lens at layer {ll.get('layer')} (random directions 95%: "
                            f"[{_fmt(ll.get('random_lo'))}, {_fmt(ll.get('random_hi'))}])"))
    return blocks


def _projected_n(s: dict, k: str) -> dict:
    """Trained and naive N per class now and projected for the reliability target (probes.metrics.n_for_reliability)."""
    rel = s.get("reliability_at_l_star") or {}
    out = {}
    for prefix in ("v", "u"):
        r = (rel.get("vectors") or {}).get(f"{prefix}_{k}")
        if r:
            spread = f" ({_fmt(r['split_half_min'])} to {_fmt(r['split_half_max'])})" if "split_half_min" in r else ""
            out[f"{prefix}_{k} split-half ({rel['space']})"] = _fmt(r["split_half_cos"]) + spread
            out[f"{prefix}_{k} N/class now -> for {rel['target']}"] = f"{r['n_per_class']} -> {r['n_per_class_for_target'] or 'inf'}"
    return out


def seeds_table_markdown(run_dirs: list[str | Path]) -> str:
    """One row per claim, one column per run (its seed and status), each cell the verdict and the rule's headline
    number, and how many confirmatory runs reproduce it: the across-seeds claims table, read from each claims.json."""
    written = [json.loads((Path(r) / "report" / "claims.json").read_text()) for r in run_dirs]
    stamps = {w["protocol"]["hash"] for w in written}
    if len(stamps) > 1:
        raise ValueError(f"the runs were judged under different protocols ({', '.join(sorted(stamps))}); rebuild their reports first")
    head = ["claim"] + [f"seed {w['seed']} ({w['status']})" for w in written] + ["confirmatory runs reproducing"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for i, c in enumerate(written[0]["claims"]):
        cells = []
        for w in written:
            r = w["claims"][i]
            cells.append(f"{r['verdict']} ({_fmt(r['value'])})")
        conf = [w["claims"][i]["verdict"] for w in written if w["status"] == "confirmatory"]
        lines.append(f"| {c['id']}. {c['claim']} | " + " | ".join(cells) + f" | {conf.count('reproduced')} of {len(conf)} |")
    return "\n".join(lines) + "\n"


def claims_table_markdown(run_dir: str | Path) -> str:
    """Just the claims table, for pasting into the README."""
    return to_markdown(_claims(Path(run_dir))[2:], Path(run_dir))
