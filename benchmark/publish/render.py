"""The rendered page (``<out>/README.md``): every published table in Markdown with its marks, bold
cells, sample pictures, curves and provenance, and each suite's summary across datasets.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from urllib.parse import quote

from genbench.formatting import md_text, number
from genbench.publish.plots import BUDGET_UNITS, plot_budget_curves, plot_training_curves
from genbench.publish.rows import (
    row_key,
)
from genbench.publish.table import (
    BOARD_HEAD,
    BOARD_TAIL,
    FLOAT,
    INT,
    TEXT,
    TRIAL_HEAD,
    TRIAL_TAIL,
    Table,
    write_if_changed,
)
from genbench.ranking import (
    FLAG,
    MARK,
    TEST,
    ColumnFacts,
    Entry,
    bold_cells,
    chance_marks,
    direction_of,
    finite,
    flagged,
    loads,
    marked,
    merge_marks,
    notes_text,
    summary_rows,
)
from genbench.repro import REPRO_SUITE, render_suite
from genbench.results import (
    REFERENCE_MODEL,
)

THUMB = 280  # widest sample picture shown in a README table, in pixels (an 8 x 8 grid of 32-pixel images)
TABLE_METRICS = 6  # metric columns of a README table; the CSV linked under it has all of them
# a README table shows a likelihood once: in bits/dim where there is a bits/dim column
TWINS = {"nll": "bpd", "iwae": "iwae_bpd", "ais": "ais_bpd"}
# ----------------------------------------------------------------------------- rendering


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def read_board(path: Path) -> Table:
    return Table.read(path, BOARD_HEAD, BOARD_TAIL, metric_suffix=True)


def board_metrics(table: Table) -> list[str]:
    fixed = {c for c, _ in BOARD_HEAD + BOARD_TAIL}
    return [c for c in table.columns if c not in fixed and not c.endswith("_ci95")]


def headline(table: Table, rows: list[dict], facts: ColumnFacts) -> list[str]:
    present = [m for m in board_metrics(table) if any(r.get(m) is not None for r in rows)]
    shown = [m for m in facts.headline(present) if TWINS.get(m) not in present]
    return shown[:TABLE_METRICS] or present[:TABLE_METRICS]


def best_values(rows: list[dict], metrics: list[str], directions: dict[str, str]) -> dict[str, float]:
    """Per metric with a direction ("higher" or "lower"), the best mean among the models' rows (the
    reference row is a level, not a contender; flagged rows and marked cells do not count); only
    where the rows differ (all tied: none is best)."""
    best = {}
    for m in metrics:
        direction = direction_of(m, directions)
        if direction == "none":
            continue
        vals = [r[m] for r in rows if r["status"] in ("ok", "partial") and r.get(m) is not None
                and m not in row_marks(r) and not row_warnings(r)]
        if len(set(vals)) >= 2:
            best[m] = min(vals) if direction == "lower" else max(vals)
    return best


def row_marks(row: dict) -> dict[str, str]:
    """Column -> reason of a board row: its seeds' marks and any cell at or below its chance level
    (computed again from the means, so a board published before marks existed shows them too)."""
    marks = loads(row.get("marks"), {})
    means = {c: v for c, v in row.items() if isinstance(v, float) and not c.endswith("_ci95")}
    extra = {c: why for c, why in chance_marks(means).items() if why not in marks.get(c, "")}
    return merge_marks(marks, extra)


def row_warnings(row: dict) -> list[str]:
    return loads(row.get("warnings"), [])


def seed_values(trials: list[dict]) -> dict[tuple, dict[str, list[float]]]:
    """Per board row key, column -> the values of its seeds that finished (what the t-test compares)."""
    out: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    fixed = {c for c, _ in TRIAL_HEAD + TRIAL_TAIL}
    for r in trials:
        if r["status"] not in ("ok", "reference"):
            continue
        for c, v in r.items():
            if c not in fixed and finite([v]):
                out[row_key(r)][c].append(float(v))
    return out


def bold_rows(rows: list[dict], metrics: list[str], directions: dict[str, str],
              seeds: dict[tuple, dict[str, list[float]]] | None = None) -> dict[str, set[int]]:
    """Column -> the indices of ``rows`` set in bold (:func:`genbench.ranking.bold_cells`).  Without
    ``seeds`` each row counts as one seed at its mean."""
    entries = []
    for r in rows:
        values = (seeds or {}).get(row_key(r)) or {m: finite([r.get(m)]) for m in metrics}
        entries.append(Entry({m: list(values.get(m, [])) for m in metrics}, row_marks(r), row_warnings(r),
                             contender=r["model"] != REFERENCE_MODEL and r["status"] in ("ok", "partial")))
    return bold_cells(entries, metrics, directions)


def markdown_table(rows: list[dict], metrics: list[str], directions: dict[str, str],
                   seeds: dict[tuple, dict[str, list[float]]] | None = None) -> list[str]:
    """A Markdown table of board rows: ↓/↑ on columns with a direction, bold by
    :func:`bold_rows`, MARK after a marked value, FLAG before a flagged model, and a notes column
    with the reasons where any row has one."""
    arrows = {"lower": " ↓", "higher": " ↑"}
    notes = [notes_text(row_marks(r), row_warnings(r)) for r in rows]
    heads = ["model", "family", "status", "seeds", "steps",
             *[m + arrows.get(direction_of(m, directions), "") for m in metrics], *(["notes"] if any(notes) else [])]
    lines = ["| " + " | ".join(md_text(h) for h in heads) + " |",
             "|" + "|".join([":--"] * 3 + ["--:"] * (len(heads) - 3 - any(notes)) + [":--"] * any(notes)) + "|"]
    bold = bold_rows(rows, metrics, directions, seeds)
    for i, r in enumerate(rows):
        marks = row_marks(r)
        steps = r.get("used_steps")
        cells = [md_text(flagged(r["model"], bool(row_warnings(r)))), md_text(r["family"]), md_text(r["status"]),
                 f"{r['seeds_ok']}/{r['seeds']}",
                 str(round(steps)) if steps is not None and r["model"] != REFERENCE_MODEL else ""]
        for m in metrics:
            text = number(r.get(m))
            if text and r.get(f"{m}_ci95") is not None:
                text += f" ± {number(r[f'{m}_ci95'], 2)}"
            text = marked(text, m in marks)
            if text and i in bold.get(m, ()):
                text = f"**{text}**"
            cells.append(text)
        if any(notes):
            cells.append(md_text(notes[i], 400))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


LEGEND = (f"Bold: the best mean and every model not significantly different from it ({TEST}; a one-seed row "
          f"competes only where no row has more seeds). {MARK}: the value failed its own diagnostic or is at or "
          f"below its chance level; {FLAG}: a finding about the whole row (e.g. it copies training data). Neither "
          "is ever bold, nor is `real-heldout` or a column without a direction (chance levels, statistics with no "
          "better side); the reasons are in *notes*.")


def render(out_dir: Path, directions: ColumnFacts) -> tuple[Path, list[Path]]:
    """README.md, the budget-curve and training-curve plots and each suite's ``summary.csv`` from every leaderboard CSV
    under ``out_dir``."""
    out_dir = Path(out_dir)
    boards = sorted(p for p in out_dir.glob("*/*-trials.csv"))
    sections, toc, plots = [], [], []
    by_suite: dict[str, dict[str, list[dict]]] = defaultdict(dict)
    suite_trials: dict[Path, list[dict]] = defaultdict(list)
    for trials_path in boards:
        suite_dir = trials_path.parent
        board_path = suite_dir / (trials_path.name[: -len("-trials.csv")] + ".csv")
        if not board_path.exists():
            continue
        table = read_board(board_path)
        if not table.rows:
            continue
        trial_rows = Table.read(trials_path, TRIAL_HEAD, TRIAL_TAIL).rows
        suite_trials[suite_dir].extend(trial_rows)
        seeds = seed_values(trial_rows)
        suite, dataset = table.rows[0]["suite"], table.rows[0]["dataset"]
        by_suite[suite_dir.name][dataset] = [
            {"model": r["model"], "budget": r["budget"], "status": r["status"],
             "values": seeds.get(row_key(r)) or {}, "marks": row_marks(r), "warnings": row_warnings(r)}
            for r in table.rows]
        curves = plot_budget_curves(table, suite_dir, directions)
        plots += curves
        training = plot_training_curves(table, suite_dir)
        plots += training
        title = f"{suite} / {dataset}"
        toc.append(f"- [{md_text(title)}](#{_anchor(title)})")
        sections += _section(table, title, out_dir, board_path, trials_path, curves, directions, seeds, training)
    summaries = []
    # each family against its own paper (the repro suite), and how much every row moves across seeds
    families = {r["model"]: r["family"] for rows in suite_trials.values() for r in rows if r.get("family")}
    for suite_dir in sorted(suite_trials, key=lambda d: (d.name != REPRO_SUITE, d.name)):
        lines, written = render_suite(out_dir, suite_dir, suite_trials[suite_dir], write_if_changed, families)
        summaries += lines
        toc[:0] = [f"- [{md_text(line[3:])}](#{_anchor(line[3:])})" for line in lines if line.startswith("## ")]
        plots += [p for p in written if p.suffix == ".png"]
    for suite in sorted(by_suite):
        rows = write_summary(out_dir / suite, by_suite[suite], directions)
        if rows:
            title = f"{suite}: across datasets"
            summaries += _summary_section(rows, title, out_dir, out_dir / suite / SUMMARY)
            toc.insert(0, f"- [{md_text(title)}](#{_anchor(title)})")
    _drop_stale_plots(out_dir, plots)
    lines = [
        "# genbench leaderboards",
        "",
        "Written by `genbench publish` from the trial records of `genbench run`. Each row is one model trained "
        "under one compute budget on one dataset and scored with one evaluation protocol. Numbers are means over "
        "seeds ± the half-width of a 95% Student-t interval (no ± with one seed); ↓ lower is better, ↑ higher is "
        "better; `real-heldout` is held-out real data (the validation split) scored like a model against the "
        "same test split: the level real data reaches at these sample counts, not a floor. Sample-quality "
        "headline columns compare samples with the test split; each trial is evaluated at its "
        "best-on-validation state. *steps* is the number of optimisation steps the budget bought (the "
        "rounded mean over seeds).",
        "",
        LEGEND,
        "",
        "The tables show headline metrics; the CSV linked under each has every metric with its interval and "
        "each row's provenance: genbench, torch and torch-fidelity versions, git commit, device, budget used, "
        "evaluation profile, estimator settings and sample counts, feature extractor and weights hash, config, "
        "and the command that reproduces the row. The per-trial CSV has every seed.",
        "",
        *toc,
        "",
        *summaries,
        *sections,
    ]
    readme = out_dir / "README.md"
    write_if_changed(readme, "\n".join(lines).rstrip() + "\n")
    return readme, plots


# ----------------------------------------------------------------------------- summary across datasets

SUMMARY = "summary.csv"
SUMMARY_COLUMNS = (("suite", TEXT), ("model", TEXT), ("budget", TEXT), ("iqm", FLOAT), ("iqm_low", FLOAT),
                   ("iqm_high", FLOAT), ("datasets", INT), ("of_datasets", INT), ("scores", INT),
                   ("metrics", TEXT), ("left_out", TEXT))
SUMMARY_TEXT = ("Interquartile mean (IQM: the mean of the middle 50%) of normalised scores over the suite's "
                "datasets and seeds, with a 95% stratified-bootstrap interval (seeds resampled within each dataset, "
                "2000 resamples; Agarwal et al. 2021). Each dataset is scored by its first metric among fid, mode_kl, "
                "bpd, nll that two or more models report; a seed's score is (value − worst) / (anchor − worst), "
                "oriented so higher is better, where worst is the worst model mean on that dataset and anchor is "
                "`real-heldout` where the dataset has that row, else the best model mean: 1 = as good as held-out "
                "real data (or the best model), 0 = the worst model. Flagged rows and marked cells are left out. "
                "Models scored on fewer datasets than the others are not directly comparable: rows are ordered by the "
                "number of datasets scored (*datasets*), then by IQM.")


def write_summary(suite_dir: Path, datasets: dict[str, list[dict]], directions: dict[str, str]) -> list[dict]:
    """``<suite>/summary.csv`` (see ``SUMMARY_TEXT``); removed where the suite no longer has two
    datasets to summarise."""
    rows = summary_rows(datasets, directions, REFERENCE_MODEL)
    path = suite_dir / SUMMARY
    if not rows:
        if path.exists():
            path.unlink()
        return []
    rows = [dict(r, suite=suite_dir.name) for r in rows]
    cols = [c for c, _ in SUMMARY_COLUMNS]
    write_if_changed(path, Table(cols, dict(SUMMARY_COLUMNS), rows).to_csv())
    return rows


def _summary_section(rows: list[dict], title: str, out_dir: Path, path: Path) -> list[str]:
    out = [f"## {md_text(title)}", "", SUMMARY_TEXT, "",
           f"Table: [{md_text(path.name)}]({_link(out_dir, path)})", "",
           "| model | budget | IQM [95% interval] | datasets | scored by |", "|:--|:--|--:|--:|:--|"]
    for r in rows:
        interval = f"{r['iqm']:.3f} [{r['iqm_low']:.3f}, {r['iqm_high']:.3f}]" if r["scores"] else ""
        scored = r["metrics"] + (f"; left out: {r['left_out']}" if r["left_out"] else "")
        out.append(f"| {md_text(r['model'])} | {md_text(r['budget'])} | {interval} | "
                   f"{r['datasets']}/{r['of_datasets']} | {md_text(scored, 300)} |")
    return out + [""]


def _link(out_dir: Path, path: Path) -> str:
    return quote(path.relative_to(out_dir).as_posix())


def _section(table: Table, title: str, out_dir: Path, board_path: Path, trials_path: Path, curves: list[Path],
             directions: ColumnFacts, seeds: dict[tuple, dict[str, list[float]]] | None = None,
             training: list[Path] = ()) -> list[str]:
    rows = table.rows
    reference = [r for r in rows if r["model"] == REFERENCE_MODEL]
    models = [r for r in rows if r["model"] != REFERENCE_MODEL]
    budgets = sorted({(r["budget_kind"], r["budget_amount"], r["budget"]) for r in models})
    out = [f"## {md_text(title)}", "",
           f"Full table: [{md_text(board_path.name)}]({_link(out_dir, board_path)}) · every seed: "
           f"[{md_text(trials_path.name)}]({_link(out_dir, trials_path)})", ""]
    for kind, amount, text in budgets or [("none", 0.0, "")]:
        shown = [r for r in models if (r["budget_kind"], r["budget_amount"]) == (kind, amount)] + reference
        metrics = headline(table, shown, directions)
        if budgets:
            out += [f"### budget {md_text(text)} ({BUDGET_UNITS.get(kind, kind)})", ""]
        out += markdown_table(shown, metrics, directions, seeds) + [""]
        failed = [r for r in shown if r.get("reason")]
        if failed:
            out += ["Failed trials:", ""]
            out += [f"- {md_text(r['model'])}: {md_text(r['reason'], 300)}" for r in failed]
            out.append("")
        grids = [r for r in shown if r.get("samples") and (board_path.parent / r["samples"]).exists()]
        if grids:
            out += ["Samples (the lowest seed that finished):", ""]
            for start in range(0, len(grids), 4):
                chunk = grids[start:start + 4]
                out.append("| " + " | ".join(md_text(r["model"]) for r in chunk) + " |")
                out.append("|" + "|".join([":-:"] * len(chunk)) + "|")
                out.append("| " + " | ".join(_thumbnail(out_dir, board_path.parent / r["samples"], r["model"])
                                             for r in chunk) + " |")
                out.append("")
    if curves:
        out += ["### budget curves", ""]
        out += [f"![{md_text(p.stem)}]({_link(out_dir, p)})" for p in curves]
        out.append("")
    if training:
        out += ["### training curves", "",
                "Every loss each model's `train_step` returned, against the step (the lowest seed that finished; "
                "the CSVs are under `curves/`).", ""]
        out += [f"![{md_text(p.stem)}]({_link(out_dir, p)})" for p in training]
        out.append("")
    out += _provenance(rows) + [""]
    return out


def _thumbnail(out_dir: Path, png: Path, model: str) -> str:
    """A sample picture at its own size up to ``THUMB`` pixels wide (pixel blocks stay sharp where it
    is not scaled), linked to the full picture (input -> output panels are wider than a grid)."""
    data = png.read_bytes()[:24]
    native = int.from_bytes(data[16:20], "big") if data[:8] == b"\x89PNG\r\n\x1a\n" else THUMB
    link = _link(out_dir, png)
    return (f'<a href="{link}"><img src="{link}" width="{min(native, THUMB)}" '
            f'alt="samples of {md_text(model)}"></a>')


def _provenance(rows: list[dict]) -> list[str]:
    def distinct(col: str) -> str:
        vals = sorted({v for r in rows for v in str(r.get(col) or "").split(" | ") if v})
        return ", ".join(vals) if vals else "unknown"

    extractors = sorted({(r["extractor"], r["extractor_weights"]) for r in rows if r.get("extractor")})
    feat = "; ".join(f"{md_text(n)} (weights {md_text(w)})" for n, w in extractors) or "none"
    return [f"<sub>Profile {md_text(distinct('profile'))} · features {feat} · device "
            f"{md_text(distinct('device'))} · genbench {md_text(distinct('genbench_version'))}, torch "
            f"{md_text(distinct('torch_version'))}, commit {md_text(distinct('git_commit'))}</sub>"]


def _drop_stale_plots(out_dir: Path, keep: list[Path]) -> None:
    """Plots are derived from the CSVs: one the CSVs no longer call for is removed."""
    keep = {p.resolve() for p in keep}
    for png in out_dir.glob("*/plots/*-vs-*.png"):
        if png.resolve() not in keep and any(png.parent.parent.glob("*-trials.csv")):
            png.unlink()

