"""The Ray executor: each trial a Ray task on a real (local) Ray cluster, and the same leaderboard as
the local executor for a deterministic suite (step budget, CPU, same seeds)."""

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from genbench.cli import main

ray = pytest.importorskip("ray", reason='the Ray executor needs the ray extra: pip install -e ".[ray]"')


@pytest.fixture()
def ray_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    # Ray puts Unix sockets under its temp dir, and a socket path may not exceed 107 bytes: pytest's
    # tmp_path plus Ray's session folder is longer than that, so the temp dir gets a short name of
    # its own (removed with the test's files).
    temp = tmp_path / "ray"
    if len(str(temp)) > 40:
        temp = Path(tempfile.mkdtemp(prefix="gb-ray-"))
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if temp.parent != tmp_path:
            shutil.rmtree(temp, ignore_errors=True)


def records(suite_dir):
    out = {}
    for p in (suite_dir / "trials").glob("*.json"):
        r = json.loads(p.read_text())
        out[(r["model"], r["seed"])] = r
    return out


def test_ray_executor_gives_the_local_leaderboard(ray_cluster, tmp_path):
    suite = ["run", "--model", "vae", "--model", "gan", "--dataset", "ring8", "--budget", "5steps",
             "--profile", "test", "--device", "cpu", "--threads", "1"]
    assert main([*suite, "--runs-dir", str(tmp_path / "local")]) == 0
    assert main([*suite, "--runs-dir", str(tmp_path / "ray-runs"), "--executor", "ray"]) == 0

    local, remote = records(tmp_path / "local" / "test"), records(tmp_path / "ray-runs" / "test")
    assert set(remote) == {("vae", 0), ("gan", 0)}
    for key, rec in remote.items():
        assert rec["status"] == "ok", rec.get("reason")
        assert rec["metrics"] == local[key]["metrics"], key
        assert rec["used"]["steps"] == 5
        assert (tmp_path / "ray-runs" / "test" / rec["samples"]).stat().st_size > 0  # shipped back by the task

    cols = ["model", "status", "seeds", "used_steps", "elbo", "iwae", "ais", "modes", "hq_pct", "mode_kl"]
    a = pd.read_csv(tmp_path / "local" / "test" / "leaderboard-ring8.csv")
    b = pd.read_csv(tmp_path / "ray-runs" / "test" / "leaderboard-ring8.csv")
    pd.testing.assert_frame_equal(a[cols], b[cols])
