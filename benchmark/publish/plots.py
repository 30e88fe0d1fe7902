"""Pictures of the published tables: a headline metric against the budget, and each row's
training losses against the step.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from genbench.publish.rows import (
    curves_name,
    safe_name,
)
from genbench.publish.table import (
    Table,
    write_bytes_if_changed,
)
from genbench.ranking import (
    direction_of,
    finite,
)
from genbench.results import (
    REFERENCE_MODEL,
)

# Budget curves: per group, the first column present is plotted (bits/dim where there is one).
CURVES = (("fid",), ("bpd", "nll"), ("iwae_bpd", "iwae"), ("ais_bpd", "ais"), ("hq_pct",), ("fid_target",))
# curves drawn on a log y axis: a distance between distributions spans orders of magnitude over a
# budget range (FID 300 at a tiny budget, 20 at a large one); any other positive metric whose values
# span a factor of ten or more is drawn on one too
LOG_Y = ("fid", "fid_target", "fid_inception", "kid")
BUDGET_UNITS = {"seconds": "compute seconds", "steps": "optimisation steps", "flops": "FLOPs"}
def plot_budget_curves(table: Table, suite_dir: Path, directions: dict[str, str]) -> list[Path]:
    """One PNG per headline metric (and budget kind) where the file has two or more budgets: the
    metric's mean against the budget per model, with 95% intervals as error bars and the real-data
    level as a dashed line.  The budget axis is logarithmic where the budgets are spaced
    geometrically (:func:`_geometric`), the metric axis where :func:`_log_y` says so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in table.rows if r["model"] != REFERENCE_MODEL and r["status"] in ("ok", "partial")]
    reference = next((r for r in table.rows if r["model"] == REFERENCE_MODEL), None)
    written = []
    for kind in sorted({r["budget_kind"] for r in rows}):
        at_kind = [r for r in rows if r["budget_kind"] == kind]
        amounts = sorted({r["budget_amount"] for r in at_kind})
        if len(amounts) < 2:
            continue
        for group in CURVES:
            metric = next((m for m in group if sum(r.get(m) is not None for r in at_kind) >= 2), None)
            if metric is None:
                continue
            fig = Figure(figsize=(7.5, 4.2), dpi=100)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            values = [r[metric] for r in at_kind if r.get(metric) is not None]
            if reference is not None and reference.get(metric) is not None:
                values.append(reference[metric])
            log_y = _log_y(metric, values)
            for i, model in enumerate(sorted({r["model"] for r in at_kind})):
                pts = sorted((r["budget_amount"], r[metric], r.get(f"{metric}_ci95") or 0.0, r["family"])
                             for r in at_kind if r["model"] == model and r.get(metric) is not None)
                if not pts:
                    continue
                xs, ys, es, fams = zip(*pts)
                # on a log axis a bar reaching zero or below would vanish: stop it just above zero
                low = [min(e, 0.95 * y) for y, e in zip(ys, es)] if log_y else es
                ax.errorbar(xs, ys, yerr=[low, es], capsize=3, label=f"{model} ({fams[0]})", **_style(i))
            if reference is not None and reference.get(metric) is not None:
                ax.axhline(reference[metric], color="gray", linestyle="--", linewidth=1, label="real held-out")
            log_x = _geometric(amounts)
            ax.set_xscale("log" if log_x else "linear")
            if log_y:
                ax.set_yscale("log")
            labels = {r["budget_amount"]: r["budget"] for r in at_kind}
            ax.set_xticks(amounts)
            ax.set_xticklabels([labels[a] for a in amounts])
            ax.minorticks_off()
            better = direction_of(metric, directions)
            said = [f"{better} is better"] * (better != "none") + ["log scale"] * log_y
            ax.set_ylabel(metric + (f" ({', '.join(said)})" if said else "") + ", mean ± 95% interval")
            ax.set_xlabel(f"budget ({BUDGET_UNITS.get(kind, kind)}" + (", log scale)" if log_x else ")"))
            ax.set_title(f"{table.rows[0]['dataset']}: {metric} against budget (suite {table.rows[0]['suite']})")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the curves
            buf = io.BytesIO()
            fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
            path = suite_dir / "plots" / f"{safe_name(table.rows[0]['dataset'])}-{metric}-vs-{kind}.png"
            write_bytes_if_changed(path, buf.getvalue())
            written.append(path)
    return written


def _geometric(amounts: list[float]) -> bool:
    """Whether budgets are spaced geometrically (10s, 30s, 90s) rather than evenly (10s, 20s, 30s):
    their ratios vary less than their differences.  Two budgets: geometric when ten or more apart."""
    if len(amounts) < 3:
        return amounts[-1] >= 10 * amounts[0] > 0
    if amounts[0] <= 0:
        return False
    diffs = [b - a for a, b in zip(amounts, amounts[1:])]
    ratios = [b / a for a, b in zip(amounts, amounts[1:])]
    return max(ratios) / min(ratios) < max(diffs) / min(diffs)


def _log_y(metric: str, values: list[float]) -> bool:
    vals = finite(values)
    if not vals or min(vals) <= 0:
        return False
    return metric in LOG_Y or max(vals) >= 10 * min(vals)


def _style(i: int) -> dict:
    """Line style of the i-th model: ten strong colours with circles, then their light shades with
    squares, then the same with triangles (a full suite has more than ten models)."""
    from matplotlib import colormaps

    color = colormaps["tab10"](i % 10) if i // 10 % 2 == 0 else colormaps["tab20"](2 * (i % 10) + 1)
    return {"color": color, "marker": "os^"[i // 20 % 3]}


def plot_training_curves(table: Table, suite_dir: Path, columns: int = 4) -> list[Path]:
    """One PNG per budget of the file: a panel per model whose curves were published
    (:func:`curves_name`), each loss against the step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written = []
    rows = [r for r in table.rows if r["model"] != REFERENCE_MODEL and (suite_dir / curves_name(r)).exists()]
    for budget in sorted({r["budget"] for r in rows}):
        shown = sorted((r for r in rows if r["budget"] == budget), key=lambda r: r["model"])
        n_rows = -(-len(shown) // columns)
        fig = Figure(figsize=(3.2 * min(columns, len(shown)), 2.4 * n_rows), dpi=100)
        FigureCanvasAgg(fig)
        for i, r in enumerate(shown):
            curve = pd.read_csv(suite_dir / curves_name(r))
            ax = fig.add_subplot(n_rows, min(columns, len(shown)), i + 1)
            losses = [c for c in curve.columns if c not in ("step", "progress")]
            for j, name in enumerate(losses):
                ax.plot(curve["step"], curve[name], label=name, linewidth=1, color=_style(j)["color"])
            ax.set_title(r["model"], fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
        fig.suptitle(f"{table.rows[0]['dataset']}: training losses at budget {budget} (suite {table.rows[0]['suite']})",
                     fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
        path = suite_dir / "plots" / f"{safe_name(table.rows[0]['dataset'])}-training-vs-step-{safe_name(budget)}.png"
        write_bytes_if_changed(path, buf.getvalue())
        written.append(path)
    return written


