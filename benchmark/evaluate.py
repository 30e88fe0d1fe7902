"""``genbench evaluate``: score finished trials again from their kept weights, without training.

:func:`reevaluate` rebuilds each model from its weights file (:mod:`genbench.weights`), scores
it with the same evaluation ``genbench run`` uses after training
(:func:`genbench.runner.score_model`) and updates the trial's record in place
(:func:`merge_scores`): the metrics it computed replace their old columns, every other metric
keeps the values it had, and the training figures (steps, budget used, times, losses, curves,
model selection) are left as they were.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import torch

from genbench.errors import GenbenchError
from genbench.weights import load_weights


def rebuild_model(manager, blob: dict, spec, device: torch.device):
    """The model of a weights file: its family built from the stored config on the dataset's
    spec, in the stored state."""
    model_cls = manager.models.get(blob["model"])
    config = model_cls.make_config(blob["config"])  # a field the family no longer has is refused, by name
    torch.manual_seed(int(blob["seed"]))
    model = model_cls(config, spec).to(device)
    model.load_state_dict(blob["state_dict"])
    return model


# --- re-evaluation ------------------------------------------------------------------------------


def union_selection(manager, old, new):
    """The metric selection a record holds after ``new`` re-scored a trial scored under ``old``:
    every metric either kept (a MetricSelection)."""
    from genbench.metrics import EVERY_METRIC, MetricSelection

    names = list(manager.metrics)
    kept = {n for n in names if old.why_left_out(n) is None or new.why_left_out(n) is None}
    if kept == set(names):
        return EVERY_METRIC
    if old.only and new.only:
        return MetricSelection(only=tuple(sorted(kept)))
    return MetricSelection(skip=tuple(sorted(set(names) - kept)))


def selection_of(record: dict):
    from genbench.metrics import MetricSelection

    chosen = record.get("metric_selection") or {}
    return MetricSelection(only=tuple(chosen.get("metrics") or ()), skip=tuple(chosen.get("skip_metrics") or ()))


def merge_scores(record: dict, scored: dict, selection, manager) -> dict:
    """``record`` with the metrics that ``selection`` kept replaced by ``scored`` (the output of
    :func:`genbench.runner.score_model`); every other metric keeps its values, reasons and times,
    and the training figures are untouched.  Returns the updated record (a new dict)."""
    rec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in record.items()}
    for key in ("metrics", "estimators", "not_applicable", "metric_errors", "marks"):
        rec[key] = dict(rec.get(key) or {})
    timings = dict(rec.get("timings") or {})
    redone = [m for m in manager.metrics.values() if selection.why_left_out(m.name) is None]
    for metric in redone:  # the old outcome of every metric scored again goes
        for column in metric.columns:
            rec["metrics"].pop(column, None)
            rec["marks"].pop(column, None)
        for key in ("estimators", "not_applicable", "metric_errors"):
            rec[key].pop(metric.name, None)
    rec["metrics"].update(scored["metrics"])
    rec["marks"].update(scored["marks"])
    rec["estimators"].update(scored["estimators"])
    rec["metric_errors"].update(scored["metric_errors"])
    rec["not_applicable"].update({name: why for name, why in scored["not_applicable"].items()
                                  if selection.why_left_out(name) is None})  # "not selected" is no news
    rec["warnings"] = list(dict.fromkeys([*(rec.get("warnings") or []), *scored["warnings"]]))
    rec["extractor"] = scored["extractor"] or rec.get("extractor")
    new = scored["timings"]
    timings["metrics"] = {**(timings.get("metrics") or {}), **new["metrics"]}
    timings["prepare"] = {**(timings.get("prepare") or {}), **new["prepare"]}
    rec["timings"] = timings
    rec["metric_selection"] = union_selection(manager, selection_of(record), selection).as_dict()
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rec["evaluated_at"] = now
    rec["re_evaluated"] = True
    rec["evaluations"] = [*(record.get("evaluations") or []), {
        "at": now, "metric_selection": selection.as_dict(), "metrics": sorted(m.name for m in redone),
        "eval_s": new["eval_s"], "prepare_s": new["prepare_s"], "command": _command()}]
    return rec


def _command() -> str:
    import sys

    return " ".join(["genbench", *sys.argv[1:]]) if sys.argv else ""


def reevaluate(manager, runs_dir: Path, suite: str, selection, *, models=None, datasets=None, profiles=None,
               device: str = "auto", console=None) -> tuple[list[dict], list[str]]:
    """Score the finished trials of ``runs_dir/suite`` again from their kept weights, under
    ``selection``, each under its own profile; write each updated record atomically as soon as it
    is scored, then the leaderboards.  ``models``/``datasets``/``profiles`` restrict the trials.

    Returns (the updated records, one line per trial that could not be scored: no kept weights,
    an unreadable file, a metric run that failed).  One trial's problem never stops the others."""
    from rich.console import Console

    from genbench.profiles import get_profile
    from genbench.results import load_records, record_path, write_error, write_leaderboards, write_record
    from genbench.runner import resolve_device, score_model
    from genbench.suite import DatasetCache, lock_suite

    console = console or Console()
    runs_dir = Path(runs_dir)
    out_dir = runs_dir / suite
    chosen = [r for r in load_records(runs_dir, suite)
              if r.get("status") == "ok" and (not models or r["model"] in models)
              and (not datasets or r["dataset"] in datasets) and (not profiles or r.get("profile") in profiles)]
    if not chosen:
        raise GenbenchError(f"no finished trials in suite {suite!r} under {str(runs_dir)!r} match; "
                            "`genbench leaderboard --suite SUITE` shows what is there")
    torch_device = resolve_device(device)
    data = DatasetCache(manager, torch_device)
    updated, problems = [], []
    try:
        lock = lock_suite(out_dir)  # one writer at a time: a `genbench run` of the suite is refused meanwhile
    except OSError as exc:
        raise GenbenchError(f"{write_error(exc, out_dir / '.genbench.lock')}: the records cannot be updated; make "
                            "the runs folder writable") from None
    try:
        for rec in chosen:
            tid = rec["trial_id"]
            if not (rec.get("weights") or {}).get("path"):
                problems.append(f"trial {tid} has no kept weights: rerun it with --keep-weights "
                                "(genbench run ... --keep-weights --rerun)")
                continue
            if rec["model"] not in manager.models:
                problems.append(f"trial {tid}: model {rec['model']!r} is not registered here; load its plugin "
                                "(--plugin FILE.py) to evaluate it")
                continue
            console.print(f"[dim]evaluating {tid}[/dim]")
            try:
                blob = load_weights(out_dir / rec["weights"]["path"])
                if blob.get("config_hash") != rec.get("config_hash"):
                    raise GenbenchError(f"weights file {rec['weights']['path']} belongs to another configuration "
                                        f"(hash {blob.get('config_hash')!r}, the record {rec.get('config_hash')!r})")
                dataset = data.get(rec["dataset"])
                model = rebuild_model(manager, blob, dataset.spec, torch_device)
                scored = score_model(model, dataset, manager, get_profile(rec["profile"]), int(rec["seed"]),
                                     torch_device, selection)
            except GenbenchError as exc:
                problems.append(f"trial {tid}: {exc}")
                continue
            except Exception as exc:  # the model broke its contract, or could not be rebuilt
                problems.append(f"trial {tid} was not re-evaluated (its record is as it was): "
                                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
                continue
            new = merge_scores(rec, scored, selection, manager)
            path = record_path(runs_dir, suite, tid)
            try:
                write_record(path, new)
            except OSError as exc:
                problems.append(f"trial {tid}: {write_error(exc, path)}: its new scores were not saved")
                continue
            updated.append(new)
        if updated:
            try:
                write_leaderboards(load_records(runs_dir, suite), out_dir)
            except OSError as exc:
                problems.append(f"{write_error(exc, out_dir)}: the leaderboard CSVs were not rewritten "
                                "(the records are)")
    finally:
        lock.close()
    return updated, problems
