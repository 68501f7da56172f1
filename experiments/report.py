"""``report.md`` and PNG plots from ``results.csv`` (+ ``utilisation.csv``, ``optimal.csv``).

Headline (per base cluster, over the scenarios marked ``headline``): SynergAI against the **strongest
baseline** of each scenario -- the baseline with the fewest violations there, summed over the scenario's
loads and seeds (ties: less summed lateness). Two numbers:

- pooled reduction = sum over headline scenarios of the strongest baseline's violations / sum of SynergAI's
  (no smoothing; ``inf`` when SynergAI has none);
- geometric mean over headline scenarios of the per-scenario factor ``(V_b + 1) / (V_s + 1)`` (+1 keeps
  scenarios where both are near zero finite; it pulls factors towards 1, never away).

Every loss is listed: each (scenario, baseline) and each (scenario, load, baseline) where a baseline has
fewer violations than SynergAI. Baselines are every online policy except SynergAI and its own rule variant
(``synergai-ll``); the SynergAI-plan baselines (``slo-mael+plan``, ``offline-only``, ``least-loaded``,
``round-robin``, ``random``) and the tier-only plans (``edge-only``, ``cloud-only``) count.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

SYN = "synergai"
REF = "slo-mael"
PLAN_RULE = "slo-mael+plan"
NOT_BASELINES = {SYN, "synergai-ll", "synergai-shed"}
TARGETS = {"default": {"pooled": 2.4, "geomean": 3.0}, "edge-lite": {"pooled": 2.0}}


def _fmt(x, nd=3):
    if x is None or (isinstance(x, float) and not math.isfinite(x)) or pd.isna(x):
        return "-"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.{nd}g}"


def _table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) if not isinstance(r[c], str) else r[c] for c in cols) + " |")
    return "\n".join(lines)


def _num(df: pd.DataFrame, cols) -> pd.DataFrame:
    for c in cols:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def summarise(results: pd.DataFrame) -> dict:
    """Per-scenario totals, the strongest baseline per scenario, losses and the headline per cluster."""
    df = results[(results["policy"] != "optimal") & (results["status"] == "ok")].copy()
    if "cluster" not in df.columns:
        df["cluster"] = "default"
    df["cluster"] = df["cluster"].fillna("default")
    _num(
        df,
        (
            "violations",
            "requests",
            "excess_ms_total",
            "energy_j",
            "decision_us_mean",
            "p99_latency_ms",
            "unplaced",
            "shed",
            "late_p50_dl",
            "late_p99_dl",
            "late_max_dl",
            "load",
        ),
    )
    for c in ("unplaced", "shed", "late_p50_dl", "late_p99_dl", "late_max_dl"):
        if c not in df.columns:
            df[c] = np.nan
    agg = (
        df.groupby(["scenario", "policy"], sort=False)
        .agg(
            cluster=("cluster", "first"),
            requests=("requests", "sum"),
            violations=("violations", "sum"),
            excess_ms_total=("excess_ms_total", "sum"),
            late_p50_dl=("late_p50_dl", "mean"),
            late_p99_dl=("late_p99_dl", "mean"),
            late_max_dl=("late_max_dl", "max"),
            unplaced=("unplaced", "sum"),
            shed=("shed", "sum"),
            p99_latency_ms=("p99_latency_ms", "mean"),
            energy_j=("energy_j", "sum"),
            decision_us_mean=("decision_us_mean", "mean"),
            headline=("headline", "first"),
        )
        .reset_index()
    )
    agg["violation_rate"] = agg["violations"] / agg["requests"]
    agg["energy_j_per_request"] = agg["energy_j"] / agg["requests"]
    factors, scen, losses = [], [], []
    for sc, g in agg.groupby("scenario", sort=False):
        s = g[g["policy"] == SYN]
        if s.empty:
            continue
        vs, es = float(s["violations"].iloc[0]), float(s["excess_ms_total"].iloc[0])
        base = g[~g["policy"].isin(NOT_BASELINES)]
        for _, r in g.iterrows():
            if r["policy"] == SYN:
                continue
            factors.append(
                {
                    "scenario": sc,
                    "baseline": r["policy"],
                    "headline": bool(r["headline"]),
                    "cluster": r["cluster"],
                    "baseline_violations": r["violations"],
                    "synergai_violations": vs,
                    "violation_reduction": (r["violations"] + 1) / (vs + 1),
                    "baseline_excess_ms": r["excess_ms_total"],
                    "synergai_excess_ms": es,
                    "excess_reduction": (r["excess_ms_total"] + 1) / (es + 1),
                }
            )
        if base.empty:
            continue
        best = base.sort_values(["violations", "excess_ms_total", "policy"]).iloc[0]
        lost = base[base["violations"] < vs]
        per = df[df["scenario"] == sc].groupby(["load", "policy"])["violations"].sum().unstack("policy")
        load_losses = []
        if SYN in per.columns:
            for load, row in per.iterrows():
                for p in per.columns:
                    if p not in NOT_BASELINES and row[p] < row[SYN]:
                        load_losses.append(f"{p} @ {load:g} ({int(row[p])} vs {int(row[SYN])})")
                        losses.append(
                            {
                                "scenario": sc,
                                "load": load,
                                "baseline": p,
                                "baseline_violations": row[p],
                                "synergai_violations": row[SYN],
                            }
                        )
        plan_v = g[g["policy"] == PLAN_RULE]["violations"]
        scen.append(
            {
                "scenario": sc,
                "cluster": g["cluster"].iloc[0],
                "headline": bool(g["headline"].iloc[0]),
                "strongest": best["policy"],
                "strongest_violations": best["violations"],
                "synergai_violations": vs,
                "factor": (best["violations"] + 1) / (vs + 1),
                "synergai <= slo-mael+plan": (bool(vs <= float(plan_v.iloc[0])) if len(plan_v) else None),
                "lost to (summed)": ", ".join(f"{r.policy} ({int(r.violations)})" for r in lost.itertuples()) or "-",
                "lost at loads": "; ".join(load_losses) or "-",
            }
        )
    fac = pd.DataFrame(factors)
    per_sc = pd.DataFrame(scen)
    head: dict = {}
    if len(per_sc):
        for cl, h in per_sc[per_sc["headline"]].groupby("cluster", sort=False):
            vb, vs = float(h["strongest_violations"].sum()), float(h["synergai_violations"].sum())
            head[cl] = {
                "scenarios": len(h),
                "baseline_violations": vb,
                "synergai_violations": vs,
                "pooled": (vb / vs) if vs > 0 else math.inf,
                "geomean": float(np.exp(np.log(h["factor"]).mean())),
                "plan_rule_ok": all(x is not False for x in h["synergai <= slo-mael+plan"]),
            }
    each = []
    if len(fac):
        for (cl, b), g in fac[fac["headline"]].groupby(["cluster", "baseline"], sort=False):
            vb, vs = float(g["baseline_violations"].sum()), float(g["synergai_violations"].sum())
            each.append(
                {
                    "cluster": cl,
                    "baseline": b,
                    "scenarios": len(g),
                    "violations": vb,
                    "synergai": vs,
                    "pooled": (vb / vs) if vs > 0 else math.inf,
                    "geomean": float(np.exp(np.log(g["violation_reduction"]).mean())),
                    "excess (pooled)": float((g["baseline_excess_ms"].sum() + 1) / (g["synergai_excess_ms"].sum() + 1)),
                }
            )
    dec = (
        df.groupby("policy", sort=False)
        .agg(decision_us_mean=("decision_us_mean", "mean"), decision_us_p99=("decision_us_p99", "mean"))
        .reset_index()
    )
    return {
        "agg": agg,
        "factors": fac,
        "scenarios": per_sc,
        "losses": pd.DataFrame(losses),
        "headline": head,
        "each": pd.DataFrame(each),
        "decision": dec,
    }


def optimal_gap(opt: pd.DataFrame) -> pd.DataFrame:
    if opt is None or not len(opt):
        return pd.DataFrame()
    g = opt.pivot_table(
        index=["scenario", "load", "seed", "optimal_violations", "optimal_status"],
        columns="policy",
        values="violations",
        aggfunc="first",
    ).reset_index()
    if SYN in g.columns:
        g["synergai_within_1.1x+1"] = (g[SYN] <= 1.1 * g["optimal_violations"] + 1).map({True: "yes", False: "NO"})
    if "optimal_deployments" in opt.columns:
        notes = opt.groupby(["scenario", "load", "seed"])["optimal_deployments"].first()
        g["deployments solved"] = [notes.get((r.scenario, r.load, r.seed), "") for r in g.itertuples()]
    return g


def write_report(
    out: Path,
    results: pd.DataFrame,
    util: pd.DataFrame | None = None,
    opt: pd.DataFrame | None = None,
    *,
    command: str = "",
) -> Path:
    s = summarise(results)
    agg, fac, head, dec, per_sc = s["agg"], s["factors"], s["headline"], s["decision"], s["scenarios"]
    L = ["# SynergAI experiment report", ""]
    if command:
        L += [f"Reproduce: `{command}`", ""]
    L += [
        "Violations are QoS (deadline) misses, summed over loads and seeds; requests no server took (unplaced, "
        "including shed) count as violations, one deadline late. The **strongest baseline** of a scenario is the "
        "baseline with the fewest violations there. Headline per base cluster over the scenarios marked `headline`: "
        "**pooled** = sum of the strongest baselines' violations / sum of SynergAI's; **geometric mean** of the "
        "per-scenario factors (V_b + 1) / (V_s + 1). Every loss is listed below.",
        "",
        "Load is a fraction of each scenario's neutral capacity (`experiments/capacity.py`): an upper bound on the "
        "rate, at the scenario's model mix, that any deployment of the cluster could serve within the deadlines "
        "(fluid LP, no queueing, no integrality), the same for every policy. Absolute rates are given per scenario.",
        "",
    ]
    L += ["## Headline: SynergAI vs the strongest baseline per scenario", ""]
    if head:
        rows = []
        for cl, h in head.items():
            t = TARGETS.get(cl, {})
            tp = t.get("pooled")
            tg = t.get("geomean")
            rows.append(
                {
                    "cluster": cl,
                    "scenarios": h["scenarios"],
                    "strongest-baseline violations": h["baseline_violations"],
                    "synergai violations": h["synergai_violations"],
                    "pooled": h["pooled"],
                    "geomean": h["geomean"],
                    "target pooled": (f">= {tp}: {'met' if h['pooled'] >= tp else 'MISSED'}" if tp else "-"),
                    "target geomean": (f">= {tg}: {'met' if h['geomean'] >= tg else 'MISSED'}" if tg else "-"),
                    "never worse than slo-mael+plan": "yes" if h["plan_rule_ok"] else "NO",
                }
            )
        L += [_table(pd.DataFrame(rows)), ""]
    else:
        L += ["- not computed (no headline scenario ran synergai and a baseline)", ""]
    bw = dec[dec["policy"] == "slo-mael-bw"]["decision_us_mean"]
    sy = dec[dec["policy"] == SYN]["decision_us_mean"]
    if len(bw) and len(sy):
        r = float(bw.iloc[0]) / max(float(sy.iloc[0]), 1e-9)
        L += [
            f"- Decision overhead: synergai {float(sy.iloc[0]):.1f} us vs slo-mael-bw {float(bw.iloc[0]):.1f} us "
            f"per request ({r:.1f}x).",
            "",
        ]
    if len(per_sc):
        L += [
            "### Per scenario: strongest baseline and every loss",
            "",
            "`factor` = (V_strongest + 1) / (V_synergai + 1); `lost to` = baselines with fewer violations than "
            "SynergAI summed over the scenario; `lost at loads` = (baseline @ load (its violations vs SynergAI's)) "
            "summed over seeds.",
            "",
        ]
        L += [
            _table(
                per_sc.assign(
                    headline=per_sc["headline"].map({True: "yes", False: "no"}),
                    **{
                        "synergai <= slo-mael+plan": per_sc["synergai <= slo-mael+plan"].map(
                            {True: "yes", False: "NO", None: "-"}
                        )
                    },
                )
            ),
            "",
        ]
    if len(s["each"]):
        L += ["### SynergAI vs each baseline (headline scenarios)", ""]
        L += [_table(s["each"]), ""]
    gap = optimal_gap(opt)
    L += ["## Gap to the hindsight optimum", ""]
    if len(gap):
        L += [
            "`optimal` = CP-SAT on the first arrivals of the run, minimum over the deployments of the policies "
            "compared (a lower bound only where status is `optimal`). Each policy is re-run on the same arrivals.",
            "",
        ]
        L += [_table(gap), ""]
        if "synergai_within_1.1x+1" in gap.columns:
            ok = gap[gap["optimal_status"] == "optimal"]
            n_ok = int((ok["synergai_within_1.1x+1"] == "yes").sum())
            L += [
                f"SynergAI within 1.1x + 1 of the proven optimum in {n_ok} of {len(ok)} proven instances "
                f"(target: all; {'met' if n_ok == len(ok) else 'MISSED'}). The optimum models batch-1 servers, "
                "dedicated or shared, with any number of slots, exactly; deployments with batching servers are "
                "skipped (status `partial`: not a bound for them).",
                "",
            ]
    else:
        L += ["not computed in this run (scenarios with an `optimal:` section compute it).", ""]
    L += ["## Decision overhead per policy (measured wall time of `choose`, us per request)", ""]
    L += [_table(dec), ""]
    L += ["## Per scenario", ""]
    for sc, g in agg.groupby("scenario", sort=False):
        f = fac[fac["scenario"] == sc].set_index("baseline") if len(fac) else pd.DataFrame()
        t = g[
            [
                "policy",
                "requests",
                "violations",
                "violation_rate",
                "excess_ms_total",
                "late_p50_dl",
                "late_p99_dl",
                "late_max_dl",
                "unplaced",
                "shed",
                "p99_latency_ms",
                "energy_j",
                "energy_j_per_request",
                "decision_us_mean",
            ]
        ].copy()
        t["reduction (violations)"] = [
            float(f.loc[p, "violation_reduction"]) if p in f.index else math.nan for p in t["policy"]
        ]
        L += [
            f"### {sc}{' (headline)' if bool(g['headline'].iloc[0]) else ''} -- cluster {g['cluster'].iloc[0]}",
            "",
            "late_*_dl: violating requests' lateness in deadlines (p50 and p99: mean over runs; max: over runs); "
            "unplaced includes shed; energy in J (serving + idle nodes).",
            "",
        ]
        per_load = results[(results["scenario"] == sc) & (results["policy"] != "optimal")].copy()
        cap = pd.to_numeric(per_load["capacity_rps"], errors="coerce").dropna()
        if len(cap):
            L += [f"Neutral capacity (load 1.0): {_fmt(float(cap.iloc[0]))} req/s.", ""]
        L += [_table(t), ""]
        if per_load["load"].nunique() > 1:
            pv = per_load.groupby(["load", "policy"])["violation_rate"].mean().unstack("policy")
            rate = pd.to_numeric(per_load["rate_rps"], errors="coerce").groupby(per_load["load"]).first()
            pv.insert(0, "rate req/s", rate)
            pv = pv.reset_index()
            L += ["Violation rate by load (mean over seeds):", "", _table(pv), ""]
    errs = results[results["status"] == "error"]
    if len(errs):
        L += ["## Runs that could not deploy", ""]
        L += [f"- {r.scenario} / {r.policy} / load {r.load}: {r.note}" for r in errs.itertuples()]
        L += [""]
    L += [
        "## Figures",
        "",
        "- `violation_rate_vs_load.png`: violation rate vs load per policy, one panel per scenario",
        "- `excess_vs_load.png`: mean excess time (lateness past the deadline, ms per request) vs load",
        "- `decision_overhead.png`: decision overhead per policy (log scale)",
        "- `utilisation.png`: per-pool utilisation per policy (headline scenario, load nearest 0.9)",
        "- `reduction.png`: violation reduction factor of synergai vs the strongest baseline per scenario",
        "",
    ]
    p = out / "report.md"
    p.write_text("\n".join(L) + "\n")
    return p


# ---------------------------------------------------------------------------------------------- plots

_ORDER = [
    "synergai",
    "slo-mael",
    "slo-mael-bw",
    "slo-mael-dedicated",
    "k8s-native",
    "slo-mael+plan",
    "offline-only",
    "least-loaded",
    "round-robin",
    "random",
    "edge-only",
    "cloud-only",
]


def _colors(policies):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    known = {p: cmap(i % 10) for i, p in enumerate(_ORDER)}
    extra = [p for p in policies if p not in known]
    for i, p in enumerate(extra):
        known[p] = matplotlib.colormaps["Dark2"](i % 8)
    return known


def _by_load_plot(df: pd.DataFrame, metric: str, ylabel: str, path: Path, symlog: float) -> None:
    import matplotlib.pyplot as plt

    scen = list(dict.fromkeys(df["scenario"]))
    n = len(scen)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    pols = [p for p in _ORDER if p in set(df["policy"])] + sorted(set(df["policy"]) - set(_ORDER) - {"optimal"})
    colors = _colors(pols)
    for k, sc in enumerate(scen):
        ax = axes[k // cols][k % cols]
        g = df[df["scenario"] == sc]
        for p in pols:
            h = g[g["policy"] == p].groupby("load")[metric].mean()
            if h.empty:
                continue
            ax.plot(
                h.index,
                h.values,
                marker="o",
                ms=3,
                lw=2.4 if p == SYN else 1.2,
                color=colors[p],
                label=p,
                zorder=3 if p == SYN else 2,
            )
        ax.set_title(sc, fontsize=10)
        ax.set_xlabel("load (fraction of neutral capacity)")
        ax.set_ylabel(ylabel)
        ax.set_yscale("symlog", linthresh=symlog)
        top = float(np.nanmax(g[metric])) if len(g) else 1.0
        ax.set_ylim(0, 1.05 if metric == "violation_rate" else max(10 * symlog, top * 2))
        ax.grid(alpha=0.3)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if rows > 1 else 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(out: Path, results: pd.DataFrame, util: pd.DataFrame | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = results[(results["policy"] != "optimal") & (results["status"] == "ok")].copy()
    for c in ("violation_rate", "excess_ms_mean", "decision_us_mean", "load"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    paths = []
    if df.empty:
        return paths
    p = out / "violation_rate_vs_load.png"
    _by_load_plot(df, "violation_rate", "violation rate", p, 1e-3)
    paths.append(p)
    p = out / "excess_vs_load.png"
    _by_load_plot(df, "excess_ms_mean", "excess ms / request", p, 1e-2)
    paths.append(p)

    dec = df.groupby("policy")["decision_us_mean"].mean()
    pols = [q for q in _ORDER if q in dec.index] + sorted(set(dec.index) - set(_ORDER))
    colors = _colors(pols)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(pols, [dec[q] for q in pols], color=[colors[q] for q in pols])
    ax.set_yscale("log")
    ax.set_ylabel("decision time, us per request (log)")
    ax.set_title("Per-request scheduling overhead (measured)")
    for i, q in enumerate(pols):
        ax.text(i, dec[q] * 1.1, f"{dec[q]:.1f}", ha="center", fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    p = out / "decision_overhead.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    if util is not None and len(util):
        heads = set(df[df["headline"].astype(bool)]["scenario"]) or set(df["scenario"])
        order = ["poisson-mlperf"] + list(dict.fromkeys(util["scenario"]))
        sc = next((s for s in order if s in heads and s in set(util["scenario"])), util["scenario"].iloc[0])
        u = util[util["scenario"] == sc]
        load = min(u["load"].unique(), key=lambda x: abs(x - 0.9))
        m = u[u["load"] == load].groupby(["policy", "pool"])["utilisation"].mean().unstack("pool")
        m = m.reindex([q for q in _ORDER if q in m.index] + sorted(set(m.index) - set(_ORDER)))
        fig, ax = plt.subplots(figsize=(1.3 * len(m.columns) + 3, 0.45 * len(m) + 1.8))
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
        im = ax.imshow(np.ma.masked_invalid(m.values.astype(float)), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(m.columns)), m.columns, rotation=30, ha="right")
        ax.set_yticks(range(len(m.index)), m.index)
        for i in range(len(m.index)):
            for j in range(len(m.columns)):
                val = m.values[i, j]
                if not np.isnan(val):
                    ax.text(
                        j,
                        i,
                        f"{val:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if val < 0.6 else "black",
                    )
        ax.set_title(f"Per-pool utilisation, {sc} at load {load:g} (blank: no replica)")
        fig.colorbar(im, ax=ax, fraction=0.03)
        fig.tight_layout()
        p = out / "utilisation.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)

    f = summarise(results)["scenarios"]
    if len(f):
        fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(f) + 2), 4))
        colors = ["tab:blue" if h else "tab:gray" for h in f["headline"]]
        ax.bar(f["scenario"], f["factor"], color=colors)
        ax.axhline(1.0, ls="-", color="black", lw=0.8)
        ax.axhline(3.0, ls=":", color="black", lw=1, label="3x (target, geometric mean)")
        ax.set_yscale("log")
        ax.set_ylabel("(V_strongest + 1) / (V_synergai + 1)")
        ax.set_title("Violation reduction vs the strongest baseline per scenario (blue: headline)")
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        p = out / "reduction.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
