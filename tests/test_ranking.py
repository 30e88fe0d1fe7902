"""Leaderboard rules: bold by Welch's t-test, marks and flags, chance levels, the IQM summary with
its stratified bootstrap, and the sample pictures (nearest-neighbour upscaling, input -> output
panels).  Every case is built by hand: no training."""

import io
import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from scipy import stats

from genbench.cli import show_leaderboard
from genbench.datasets import Dataset
from genbench.grids import MIN_SIDE, grid_image, save_samples, upscale
from genbench.model import Capability, DataSpec, GenerativeModel
from genbench.publish import publish
from genbench.publish.render import markdown_table, render
from genbench.ranking import (
    MARK,
    ColumnFacts,
    Entry,
    bold_cells,
    chance_marks,
    direction_of,
    iqm,
    normalise,
    seed_marks,
    stratified_bootstrap,
    summary_rows,
)
from genbench.results import RECORD_SCHEMA, REFERENCE_MODEL, leaderboard, write_leaderboards

# the metrics of these tests: directions, and fid as the one headline column
LOWER = ColumnFacts({"fid": "lower", "acc": "higher", "acc_chance": "higher", "ct": "none"}, {"fid": 10})


# ----------------------------------------------------------------------------- bold


def test_bold_is_the_best_and_every_row_not_significantly_different():
    winner = [10.0, 10.5, 9.5]
    close = [10.4, 11.2, 9.9]  # overlaps the winner: Welch's p far above 5%
    far = [30.0, 31.0, 29.0]
    assert stats.ttest_ind(close, winner, equal_var=False).pvalue > 0.05
    assert stats.ttest_ind(far, winner, equal_var=False).pvalue < 0.05
    entries = [Entry({"fid": winner}), Entry({"fid": close}), Entry({"fid": far})]
    assert bold_cells(entries, ["fid"], LOWER) == {"fid": {0, 1}}
    # a clear winner stands alone
    entries = [Entry({"fid": winner}), Entry({"fid": far})]
    assert bold_cells(entries, ["fid"], LOWER) == {"fid": {0}}
    # higher is better: the direction is read
    assert bold_cells([Entry({"acc": [0.9, 0.91]}), Entry({"acc": [0.5, 0.52]})], ["acc"], LOWER) == {"acc": {0}}


def test_a_one_seed_row_is_never_bold_over_multi_seed_rows():
    entries = [Entry({"fid": [1.0]}), Entry({"fid": [10.0, 10.5]}), Entry({"fid": [30.0, 31.0]})]
    assert bold_cells(entries, ["fid"], LOWER) == {"fid": {1}}
    # where every row has one seed, the best one is bold (nothing can be tested)
    entries = [Entry({"fid": [1.0]}), Entry({"fid": [10.0]})]
    assert bold_cells(entries, ["fid"], LOWER) == {"fid": {0}}


def test_reference_flagged_rows_and_marked_cells_are_never_bold():
    ref = Entry({"fid": [0.5, 0.6]}, contender=False)
    copier = Entry({"fid": [1.0, 1.1]}, warnings=["seed 0: copies training data: C_T=-12.3"])
    unconverged = Entry({"fid": [2.0, 2.1]}, marks={"fid": "seed 1: did not converge"})
    honest = Entry({"fid": [10.0, 10.4]})
    worse = Entry({"fid": [30.0, 30.5]})
    bold = bold_cells([ref, copier, unconverged, honest, worse], ["fid"], LOWER)
    assert bold == {"fid": {3}}


def test_columns_without_a_direction_are_never_bold():
    entries = [Entry({"acc_chance": [0.5, 0.5], "ct": [-1.0, -1.2], "x": [1.0, 2.0]}),
               Entry({"acc_chance": [0.9, 0.9], "ct": [5.0, 5.1], "x": [9.0, 9.5]})]
    assert direction_of("acc_chance", LOWER) == "none"  # a chance level has no direction whatever is declared
    assert direction_of("ct", LOWER) == "none" and direction_of("x", LOWER) == "none"
    assert bold_cells(entries, ["acc_chance", "ct", "x"], LOWER) == {"acc_chance": set(), "ct": set(), "x": set()}


def test_ties_and_lone_contenders_are_not_bold():
    assert bold_cells([Entry({"fid": [3.0, 3.0]}), Entry({"fid": [3.0, 3.0]})], ["fid"], LOWER) == {"fid": set()}
    assert bold_cells([Entry({"fid": [3.0, 4.0]})], ["fid"], LOWER) == {"fid": set()}
    # constant seeds: the test is undefined, and different means differ
    assert bold_cells([Entry({"fid": [3.0, 3.0]}), Entry({"fid": [4.0, 4.0]})], ["fid"], LOWER) == {"fid": {0}}


# ----------------------------------------------------------------------------- marks and chance levels


def test_a_metric_at_or_below_its_chance_level_is_marked():
    marks = chance_marks({"mask_iou": 0.472, "mask_iou_chance": 0.486, "patch": 0.9, "patch_chance": 0.7})
    assert marks == {"mask_iou": "below its chance level 0.486"}
    assert chance_marks({"err": 0.6, "err_chance": 0.5}, {"err": "lower"}) == {"err": "above its chance level 0.5"}
    assert seed_marks([(0, {}), (1, {"iwae": "ESS 3 < 10"}), (2, {"iwae": "ESS 2 < 10"})]) == {
        "iwae": "seed 1: ESS 3 < 10; seed 2: ESS 2 < 10"}


def record(model, seed, metrics, marks=None, warnings=None, status="ok", dataset="d"):
    return {"schema": RECORD_SCHEMA, "suite": "s", "dataset": dataset, "model": model, "family": "F", "seed": seed,
            "status": status, "reason": None, "profile": "quick", "config": {"a": 1}, "config_hash": f"{model}-h",
            "budget": {"kind": "steps", "amount": 10.0, "text": "10steps"},
            "used": {"seconds": 1.0, "steps": 10 + seed, "flops": 5.0}, "metrics": metrics,
            "metric_errors": {}, "marks": marks or {}, "warnings": warnings or [],
            "trial_id": f"{dataset}-{model}-{seed}", "finished": f"2026-01-0{seed + 1}T00:00:00",
            "versions": {"genbench": "x", "torch": "y"}, "device": "cpu"}


def board_records(dataset="d", shift=0.0):
    recs = []
    for seed in range(3):
        recs.append(record("good", seed, {"fid": 10.0 + seed + shift, "acc": 0.9, "acc_chance": 0.5}, dataset=dataset))
        recs.append(record("unconverged", seed, {"fid": 11.0 + seed + shift, "acc": 0.4, "acc_chance": 0.5},
                           marks={"fid": "estimator did not converge"} if seed == 1 else None, dataset=dataset))
        recs.append(record("copier", seed, {"fid": 1.0 + seed + shift, "acc": 0.95, "acc_chance": 0.5},
                           warnings=["copies training data: C_T=-12.3"], dataset=dataset))
        recs.append(record("bad", seed, {"fid": 40.0 + seed + shift, "acc": 0.6, "acc_chance": 0.5}, dataset=dataset))
    recs.append(record(REFERENCE_MODEL, 0, {"fid": 2.0, "acc": 0.99}, status="reference", dataset=dataset))
    return recs


def test_marks_and_flags_reach_the_csv_and_the_terminal(tmp_path):
    recs = board_records()
    df = leaderboard(recs, "d", LOWER).set_index("model")
    assert "fid†: seed 1: estimator did not converge" in df.loc["unconverged", "notes"]
    assert "acc†: below its chance level 0.5" in df.loc["unconverged", "notes"]
    assert json.loads(df.loc["copier", "warnings"]) == ["seed 0, 1, 2: copies training data: C_T=-12.3"]
    assert df.loc["good", "used_steps"] == 11  # a whole number: the rounded mean of 10, 11, 12
    paths = write_leaderboards(recs, tmp_path)
    text = (tmp_path / "leaderboard-d.csv").read_text()
    assert "estimator did not converge" in text and "copies training data" in text
    assert "estimator did not converge" in (tmp_path / "trials.csv").read_text() and len(paths) == 2

    buf = io.StringIO()
    show_leaderboard(Console(file=buf, width=100, force_terminal=True, color_system="standard"), recs,
                     directions=LOWER)
    out = buf.getvalue()
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert max(len(line) for line in plain.splitlines()) <= 100
    assert "⚠ copier" in plain and "Welch" in plain and "notes" in plain
    assert "12 ± 2.5†" in plain and "fid†:" in plain and "estimator did not converge" in plain
    # bold (ANSI 1) sets the good row's fid, never the copier's or the unconverged one's
    good_line = next(line for line in out.splitlines() if "good" in line)
    copier_line = next(line for line in out.splitlines() if "copier" in line)
    assert re.search("\x1b\\[1m *11 ± 2.5", good_line) and "\x1b[1m" not in copier_line.split("copier", 1)[1]


def test_the_published_page_marks_flags_and_summarises(tmp_path):
    runs = tmp_path / "runs"
    (runs / "s" / "trials").mkdir(parents=True)
    for rec in board_records("d1") + board_records("d2", shift=5.0):
        (runs / "s" / "trials" / f"{rec['trial_id']}.json").write_text(json.dumps(rec))
    out = tmp_path / "boards"
    publish(runs, out)
    render(out, LOWER)
    readme = (out / "README.md").read_text()
    table = readme.split("## s / d1")[1]
    good = next(line for line in table.splitlines() if line.startswith("| good"))
    copier = next(line for line in table.splitlines() if line.startswith("| ⚠ copier"))
    unconverged = next(line for line in table.splitlines() if line.startswith("| unconverged"))
    assert "**11 ± 2.5**" in good
    assert "**" not in copier and "copies training data" in copier
    assert f"11\\.9{MARK}" not in unconverged and f"12 ± 2.5{MARK}" in unconverged and "**" not in unconverged
    assert "below its chance level 0.5" in unconverged and "Welch" in readme
    trials = (out / "s" / "d1-trials.csv").read_text()
    assert "estimator did not converge" in trials and "copies training data" in trials
    assert "notes" in (out / "s" / "d1.csv").read_text().splitlines()[0]
    # across datasets: the IQM summary, the flagged and the marked rows left out of it
    summary = (out / "s" / "summary.csv").read_text()
    assert summary.splitlines()[0].startswith("suite,model,budget,iqm,iqm_low,iqm_high")
    assert "## s: across datasets" in readme and "good" in summary
    assert "s,copier,10steps,,,,0,2,0,,d1 (flagged); d2 (flagged)" in summary.splitlines()
    # publishing twice changes nothing (the bootstrap has a fixed seed)
    before = summary
    publish(runs, out)
    render(out, LOWER)
    assert (out / "s" / "summary.csv").read_text() == before


def test_markdown_table_without_seeds_uses_the_means():
    rows = [{"model": "a", "family": "F", "status": "ok", "seeds": 1, "seeds_ok": 1, "used_steps": 4,
             "budget_kind": "steps", "budget_amount": 4.0, "fid": 3.0, "fid_ci95": None},
            {"model": "b", "family": "F", "status": "ok", "seeds": 1, "seeds_ok": 1, "used_steps": 4,
             "budget_kind": "steps", "budget_amount": 4.0, "fid": 5.0, "fid_ci95": None}]
    lines = markdown_table(rows, ["fid"], LOWER)
    assert lines[2].startswith("| a |") and "**3**" in lines[2] and "**" not in lines[3]


# ----------------------------------------------------------------------------- IQM and bootstrap


def test_iqm_and_its_stratified_bootstrap_against_a_hand_computation():
    # IQM of 8 scores: drop the 2 lowest and the 2 highest, average the middle 4
    scores = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0]
    assert iqm(scores) == pytest.approx((2 + 3 + 4 + 5) / 4)
    # one seed per dataset: every resample is the data itself, so the interval is the point
    point, lo, hi = stratified_bootstrap([[0.2], [0.4], [0.6], [0.8]])
    assert point == lo == hi == pytest.approx(iqm([0.2, 0.4, 0.6, 0.8]))
    # two datasets of two seeds: every resample keeps two scores of each dataset, so its IQM (the
    # mean of the middle two of four) lies between the extremes a hand enumeration gives
    strata = [[0.0, 1.0], [2.0, 3.0]]
    hand = []
    for a in ([0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]):
        for b in ([2.0, 2.0], [2.0, 3.0], [3.0, 2.0], [3.0, 3.0]):
            hand.append(np.mean(sorted(a + b)[1:3]))
    point, lo, hi = stratified_bootstrap(strata, reps=4000)
    assert point == pytest.approx(1.5)
    assert lo == pytest.approx(np.percentile(hand, 2.5), abs=0.26) and lo >= min(hand)
    assert hi == pytest.approx(np.percentile(hand, 97.5), abs=0.26) and hi <= max(hand)


def test_normalised_scores_run_from_the_worst_model_to_the_reference():
    assert normalise([40.0, 10.0, 2.0], [40.0, 10.0], 2.0, "lower") == pytest.approx([0.0, 30 / 38, 1.0])
    assert normalise([0.5, 0.9], [0.5, 0.9], None, "higher") == pytest.approx([0.0, 1.0])
    rows = {d: [{"model": m, "budget": "b", "status": "ok", "values": {"fid": v}, "marks": {}, "warnings": []}
                for m, v in (("a", [1.0, 2.0]), ("b", [9.0, 11.0]))] for d in ("d1", "d2")}
    out = summary_rows(rows, LOWER, REFERENCE_MODEL)
    assert [r["model"] for r in out] == ["a", "b"] and out[0]["datasets"] == 2 and out[0]["iqm"] > out[1]["iqm"]
    assert summary_rows({"d1": rows["d1"]}, LOWER, REFERENCE_MODEL) == []  # one dataset: nothing to summarise


# ----------------------------------------------------------------------------- pictures


def tiny_dataset(extras=None, extra_keys=None):
    g = torch.Generator().manual_seed(0)
    spec = DataSpec("tiny", "image", (1, 8, 8), levels=17, extras=extras or {})
    split = {"x": torch.rand(12, 1, 8, 8, generator=g), "y": torch.zeros(12, dtype=torch.long), **(extra_keys or {})}
    return Dataset(spec=spec, splits={s: dict(split) for s in ("train", "val", "test")})


class Noise(GenerativeModel):
    name = "noise"
    family = "test"

    @property
    def device(self):
        return torch.device("cpu")

    def sample(self, n, generator=None, condition=None):
        return torch.rand(n, *self.spec.shape, generator=generator)


class Captioned(Noise):
    name = "captioned"
    capabilities = frozenset({Capability.SAMPLE, Capability.CONDITIONAL})
    condition_key = "caption"


class Patched(Noise):
    name = "patched"
    capabilities = frozenset({Capability.SAMPLE, Capability.CONDITIONAL, "patches"})
    condition_key = "patches"


class Translator(Noise):
    name = "translator"
    capabilities = frozenset({Capability.SAMPLE, Capability.TRANSLATE})

    def translate(self, x, source, target):
        return 1 - x


def test_grids_are_upscaled_by_equal_pixel_blocks():
    x = torch.rand(2, 1, 8, 8)
    up = upscale(x)
    assert up.shape[-1] == MIN_SIDE and up.shape[-1] % 8 == 0
    blocks = up.unfold(-2, 4, 4).unfold(-2, 4, 4)  # (2, 1, 8, 8, 4, 4): each source pixel's block
    assert torch.equal(blocks, x[..., None, None].expand_as(blocks))
    img = np.asarray(grid_image(x, nrow=2))
    assert img.shape[0] == MIN_SIDE + 2  # one-pixel border around each upscaled image
    tile = img[1:1 + MIN_SIDE, 1:1 + MIN_SIDE, 0]
    assert (tile.reshape(8, 4, 8, 4) == tile[::4, ::4][:, None, :, None]).all()


def test_sample_pictures_show_inputs_beside_outputs(tmp_path):
    plain = tiny_dataset()
    save_samples(Noise(None, plain.spec), plain, tmp_path / "grid.png", 0)
    grid = Image.open(tmp_path / "grid.png")
    assert grid.width >= 8 * MIN_SIDE

    vocab = ["<pad>", "a", "thick", "seven"]
    captions = tiny_dataset({"caption": {"vocab": vocab}}, {"caption": torch.tensor([[1, 2, 3, 0]] * 12)})
    save_samples(Captioned(None, captions.spec), captions, tmp_path / "captions.png", 0)
    assert Image.open(tmp_path / "captions.png").width > 2 * MIN_SIDE

    patches = tiny_dataset(extra_keys={"patches": torch.rand(12, 3, 1, 3, 3)})
    save_samples(Patched(None, patches.spec), patches, tmp_path / "patches.png", 0)
    assert Image.open(tmp_path / "patches.png").width > 2 * MIN_SIDE

    domains = tiny_dataset({"domain": {"names": ["plain", "thick"]}},
                           {"domain": torch.tensor([0, 1] * 6)})
    save_samples(Translator(None, domains.spec), domains, tmp_path / "translate.png", 0)
    panel = np.asarray(Image.open(tmp_path / "translate.png"))
    # a source and its translation (1 - x) sit side by side: both are in the picture
    src = (domains.split("test")["x"][0, 0] * 255).round().to(torch.uint8).numpy()
    first = upscale(torch.tensor(src)[None]).numpy()[0]
    found = [(y, x) for y in range(panel.shape[0] - MIN_SIDE) for x in range(panel.shape[1] - MIN_SIDE)
             if panel[y, x, 0] == first[0, 0] and (panel[y:y + MIN_SIDE, x:x + MIN_SIDE, 0] == first).all()]
    assert found, "the source image appears unsmoothed"
    y, x = found[0]
    right = panel[y:y + MIN_SIDE, x + MIN_SIDE:, 0]
    flipped = 255 - first
    assert any((right[:, k:k + MIN_SIDE] == flipped).all() for k in range(right.shape[1] - MIN_SIDE + 1)), \
        "its translation appears to its right"


def test_points_show_data_and_samples_side_by_side(tmp_path, ring8):
    class Points(Noise):
        def sample(self, n, generator=None, condition=None):
            return torch.randn(n, 2, generator=generator)

    save_samples(Points(None, ring8.spec), ring8, tmp_path / "points.png", 0)
    img = Image.open(tmp_path / "points.png")
    assert img.width > 1.6 * img.height  # two panels, data | model


def test_fid_budget_curves_use_log_axes():
    from genbench.publish.plots import _geometric, _log_y

    assert _geometric([10, 30, 90]) and not _geometric([10, 20, 30]) and not _geometric([2, 4])
    assert _log_y("fid", [20.0, 30.0]) and not _log_y("hq_pct", [20.0, 30.0]) and _log_y("x", [1.0, 50.0])
    assert not math.isnan(iqm([1.0]))
