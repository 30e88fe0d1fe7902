"""Where evaluation time goes: every trial record keeps each metric's wall seconds, one-off
preparation (a classifier trained on first use) is timed apart, the libraries beside torch keep to
its thread count, and `genbench leaderboard --timings` shows it all per model -- records written
before the times were kept still load, with blank cells."""

import math

import pytest
import torch
from threadpoolctl import threadpool_limits

from genbench.budget import Budget
from genbench.cli import main
from genbench.manager import PluginManager
from genbench.metrics import Metric
from genbench.results import RECORD_SCHEMA, record_path, timings_table, write_record
from genbench.runner import Trial, perform_trial


class Probe(Metric):
    """Says when it was prepared and computed, and how many threads NumPy's BLAS had meanwhile."""

    name = "probe"
    columns = {"probe": "none"}

    def __init__(self):
        self.calls: list[str] = []
        self.blas_threads: set[int] = set()

    def prepare(self, dataset, profile, device):
        self.calls.append("prepare")

    def compute(self, ctx):
        from threadpoolctl import threadpool_info

        self.calls.append("compute")
        self.blas_threads = {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
        return {"probe": 1.0}


class Broken(Metric):
    name = "broken"
    columns = {"broken": "none"}

    def compute(self, ctx):
        raise RuntimeError("no value today")


@pytest.fixture(scope="module")
def timed(ring8, tmp_path_factory):
    manager = PluginManager()
    probe = Probe()
    manager.metrics.add(probe, "test")
    manager.metrics.add(Broken(), "test")
    trial = Trial("planar-flow", "ring8", 0, Budget.parse("5steps"), profile="test")
    # BLAS as a worker has it, one thread per core (the tests' OMP_NUM_THREADS=1 would hide a leak)
    with threadpool_limits(limits=max(2, torch.get_num_threads() + 1), user_api="blas"):
        record = perform_trial(trial, manager, lambda _name: ring8, torch.device("cpu"),
                               tmp_path_factory.mktemp("out"), "t")
    assert record["status"] == "ok", record.get("traceback")
    return record, probe


def test_every_evaluated_metric_has_its_wall_seconds_in_the_record(timed):
    record, _ = timed
    per_metric = record["timings"]["metrics"]
    evaluated = (set(record["estimators"]) - {"selection"}) | set(record["metric_errors"])
    assert set(per_metric) == evaluated and {"exact_likelihood", "probe", "broken"} <= evaluated
    assert "broken" in record["metric_errors"]  # a metric that raised took time too, and it is kept
    assert not set(per_metric) & set(record["not_applicable"])
    assert all(isinstance(v, float) and v >= 0 for v in per_metric.values())
    assert sum(per_metric.values()) <= record["timings"]["eval_s"]
    assert 0 < record["timings"]["eval_cpu_s"]  # CPU time of the same span, beside the wall time


def test_preparation_runs_before_evaluation_and_is_timed_apart(timed):
    record, probe = timed
    assert probe.calls == ["prepare", "compute"]
    prepared = record["timings"]["prepare"]
    assert set(prepared) == {"probe"}  # only metrics that define a prepare
    assert record["timings"]["prepare_s"] == pytest.approx(sum(prepared.values()))


def test_numpys_blas_keeps_to_torchs_thread_count_during_evaluation(timed):
    _, probe = timed
    assert probe.blas_threads == {torch.get_num_threads()}


def trial_record(model: str, seed: int, timings: dict | None, status: str = "ok") -> dict:
    rec = {"schema": RECORD_SCHEMA, "trial_id": f"{model}--d--10steps--seed{seed}--0000", "model": model,
           "family": "F", "dataset": "d", "seed": seed, "status": status, "reason": None,
           "budget": {"kind": "steps", "amount": 10, "text": "10steps"},
           "used": {"seconds": 1.0, "steps": 10, "flops": 5.0}, "metrics": {"nll": 1.0 + seed},
           "config": {"a": 1}, "profile": "quick", "finished": "2026-01-01T00:00:00",
           "versions": {"genbench": "x", "torch": "y"}}
    if timings is not None:
        rec["timings"] = timings
    return rec


RECORDS = [
    trial_record("new", 0, {"train_s": 10.0, "eval_s": 4.0, "eval_cpu_s": 3.0, "prepare_s": 2.0,
                            "metrics": {"ais": 3.0, "parzen": 0.5}}),
    trial_record("new", 1, {"train_s": 12.0, "eval_s": 6.0, "eval_cpu_s": 5.0, "prepare_s": 0.0,
                            "metrics": {"ais": 5.0, "parzen": 1.5}}),
    trial_record("new", 2, {"train_s": 99.0, "eval_s": 99.0, "metrics": {"ais": 99.0}}, status="failed"),
    trial_record("old", 0, {"train_s": 9.0, "select_s": 0.5, "eval_s": 2.0}),  # before per-metric times
    trial_record("oldest", 0, None),  # no timings at all
]


def test_timings_table_means_finished_seeds_and_leaves_what_was_not_kept_blank():
    df = timings_table(RECORDS, "d").set_index("model")
    assert df.attrs["metrics"] == ["ais", "parzen"]
    new = df.loc["new"]
    assert new["seeds"] == "2/3"  # the failed seed's times are not in the means
    assert (new["train_s"], new["eval_s"], new["eval_cpu_s"], new["prepare_s"], new["ais"], new["parzen"]) == (
        11.0, 5.0, 4.0, 1.0, 4.0, 1.0)
    old = df.loc["old"]
    assert (old["train_s"], old["eval_s"]) == (9.0, 2.0)
    assert all(math.isnan(old[c]) for c in ("eval_cpu_s", "prepare_s", "ais", "parzen"))
    assert df.loc["oldest", ["train_s", "eval_s", "prepare_s", "ais", "parzen"]].isna().all()


def test_leaderboard_timings_command_shows_old_and_new_records(tmp_path, capsys):
    for rec in RECORDS:
        write_record(record_path(tmp_path, "s", rec["trial_id"]), rec)
    assert main(["leaderboard", "--suite", "s", "--runs-dir", str(tmp_path), "--timings"]) == 0
    out = capsys.readouterr().out
    assert "genbench timings: d" in out and "time.perf_counter" in out
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
             for line in out.splitlines() if line.startswith("│")}
    # columns: seeds, train_s, eval_s, eval_cpu_s, prepare_s, ais, parzen
    assert lines["new"] == ["2/3", "11.00", "5.00", "4.00", "1.00", "4.00", "1.00"]
    assert lines["old"] == ["1/1", "9.00", "2.00", "", "", "", ""]
    assert lines["oldest"] == ["1/1", "", "", "", "", "", ""]
    # the metrics view of the same records is unchanged by the flag's existence
    assert main(["leaderboard", "--suite", "s", "--runs-dir", str(tmp_path)]) == 0
    assert "genbench leaderboard: d" in capsys.readouterr().out
