"""The published CSVs' cells and tables: typed columns, a codec that reads back what it writes,
spreadsheet-safe text (see :mod:`genbench.publish`), and files written only when they change.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from genbench.errors import GenbenchError
from genbench.ranking import (
    ColumnFacts,
)
from genbench.results import (
    REFERENCE_MODEL,
    atomic_write_bytes,
    atomic_write_text,
)

TEXT, INT, FLOAT, BOOL = "text", "int", "float", "bool"



# Columns of the per-trial CSV around the metric columns, with the type each is written as.
TRIAL_HEAD = (("suite", TEXT), ("dataset", TEXT), ("model", TEXT), ("family", TEXT), ("budget", TEXT),
              ("budget_kind", TEXT), ("budget_amount", FLOAT), ("seed", INT), ("status", TEXT),
              ("used_seconds", FLOAT), ("used_steps", INT), ("used_flops", FLOAT), ("flops_exact", BOOL),
              ("overrun", FLOAT), ("train_s", FLOAT), ("eval_s", FLOAT))
PROVENANCE = (("profile", TEXT), ("estimators", TEXT), ("extractor", TEXT), ("extractor_weights", TEXT),
              ("config_hash", TEXT), ("config", TEXT), ("plugin", TEXT), ("device", TEXT),
              ("genbench_version", TEXT), ("torch_version", TEXT), ("torch_fidelity_version", TEXT),
              ("python_version", TEXT), ("git_commit", TEXT))
# ``marks`` (column -> reason, JSON), ``warnings`` (JSON list), ``selection`` (the model-selection
# history, JSON) and ``metric_selection`` (--metrics / --skip-metrics, JSON; empty: every metric) are
# the record's own fields: a leaderboard is recomputed from this file alone
TRIAL_TAIL = (("reason", TEXT), ("fault", TEXT), ("metric_errors", TEXT), ("empty_cells", TEXT), ("marks", TEXT),
              ("warnings", TEXT), ("selection", TEXT), ("metric_selection", TEXT), *PROVENANCE,
              ("trial_key", TEXT), ("trial_id", TEXT), ("started", TEXT), ("finished", TEXT), ("command", TEXT),
              ("samples", TEXT))
# Columns of the leaderboard CSV around the metric columns (each metric ``m`` is ``m``, ``m_ci95``).
BOARD_HEAD = (("suite", TEXT), ("dataset", TEXT), ("model", TEXT), ("family", TEXT), ("budget", TEXT),
              ("budget_kind", TEXT), ("budget_amount", FLOAT), ("status", TEXT), ("seeds", INT),
              ("seeds_ok", INT), ("used_seconds", FLOAT), ("used_steps", INT), ("used_flops", FLOAT))
# ``notes``: why a cell is marked and what was found about the row, as a reader reads it; ``marks``
# and ``warnings``: the same as JSON, for programs
BOARD_TAIL = (("notes", TEXT), ("marks", TEXT), ("warnings", TEXT), ("reason", TEXT), ("metric_errors", TEXT),
              ("empty_cells", TEXT), *PROVENANCE, ("date", TEXT),
              ("command", TEXT), ("samples", TEXT))
KEY = ("model", "budget_kind", "budget_amount")  # a row of a (suite, dataset) file
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


# ----------------------------------------------------------------------------- cells


def escape_text(text: str) -> str:
    """A text cell a spreadsheet shows as text: a leading apostrophe before a formula start."""
    return "'" + text if text.startswith(FORMULA_START) else text


def unescape_text(cell: str) -> str:
    """The text that :func:`escape_text` escaped."""
    return cell[1:] if cell.startswith("'") else cell


def format_cell(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if kind == TEXT:
        return escape_text(str(value))
    if kind == BOOL:
        return "true" if value else "false"
    if kind == INT:
        return str(int(value))
    value = float(value)
    return repr(value) if math.isfinite(value) else ""


def parse_cell(cell: str, kind: str, where: str):
    if kind == TEXT:
        return unescape_text(cell)
    if cell == "":
        return None
    try:
        if kind == BOOL:
            return {"true": True, "false": False}[cell.lower()]
        if kind == INT:
            try:
                return int(cell)
            except ValueError:  # boards published before step counts were whole numbers hold their mean
                return round(float(cell))
        return float(cell)
    except (KeyError, ValueError):
        raise GenbenchError(f"{where}: {cell!r} is not a {kind}; the published CSVs are written by "
                            "`genbench publish`: restore the file from version control or delete it to publish "
                            "afresh") from None


@dataclass
class Table:
    """One published CSV: typed columns and rows of plain Python values (text unescaped)."""

    columns: list[str]
    types: dict[str, str]
    rows: list[dict] = field(default_factory=list)

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([escape_text(c) for c in self.columns])
        for row in self.rows:
            writer.writerow([format_cell(row.get(c), self.types[c]) for c in self.columns])
        return buf.getvalue()

    def frame(self) -> pd.DataFrame:
        """The table as pandas sees it once read back (numbers as floats, text as text)."""
        return pd.DataFrame([[row.get(c) for c in self.columns] for row in self.rows], columns=self.columns)

    @classmethod
    def read(cls, path: Path, head: tuple, tail: tuple, metric_suffix: bool = False) -> Table:
        fixed = dict(head + tail)
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            try:
                header = [unescape_text(c) for c in next(reader)]
            except StopIteration:
                header = []
            missing = [c for c in (*KEY, "seed" if not metric_suffix else "seeds", "config_hash") if c not in header]
            if missing:
                raise GenbenchError(f"{path} is not a genbench leaderboard CSV (no columns {missing}); move it "
                                    "away or choose another --out")
            types = {c: fixed.get(c, FLOAT) for c in header}
            rows = []
            for n, cells in enumerate(reader, start=2):
                if len(cells) != len(header):
                    raise GenbenchError(f"{path}, line {n}: {len(cells)} cells for {len(header)} columns; restore "
                                        "the file from version control or delete it to publish afresh")
                rows.append({c: parse_cell(v, types[c], f"{path}, line {n}, column {c}")
                             for c, v in zip(header, cells)})
        return cls(header, types, rows)


def trial_table(rows: list[dict], facts: ColumnFacts) -> Table:
    """The per-trial CSV: metric columns in the registered metrics' headline order, then the rest
    alphabetically (a column of a metric not installed at publish time is one of the rest)."""
    metrics = facts.order({c for r in rows for c in r} - {c for c, _ in TRIAL_HEAD + TRIAL_TAIL})
    types = {**dict(TRIAL_HEAD), **{m: FLOAT for m in metrics}, **dict(TRIAL_TAIL)}
    return Table([c for c, _ in TRIAL_HEAD] + metrics + [c for c, _ in TRIAL_TAIL], types, sort_rows(rows))


def board_table(rows: list[dict], metrics: list[str]) -> Table:
    cols = [c for m in metrics for c in (m, f"{m}_ci95")]
    types = {**dict(BOARD_HEAD), **{c: FLOAT for c in cols}, **dict(BOARD_TAIL)}
    return Table([c for c, _ in BOARD_HEAD] + cols + [c for c, _ in BOARD_TAIL], types, sort_rows(rows))


def sort_rows(rows: list[dict]) -> list[dict]:
    """Budgets in order, models by name, the reference row last, seeds in order."""
    return sorted(rows, key=lambda r: (r["model"] == REFERENCE_MODEL, r["budget_kind"], r["budget_amount"],
                                       r["model"], r.get("seed") or 0))


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it holds that already (published files change only with their content)."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def write_bytes_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        atomic_write_bytes(path, data)

