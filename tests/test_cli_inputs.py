"""Bad `genbench run` input gets one line that names the problem and the fix, before anything runs."""

import pytest
import torch

from genbench.budget import Budget
from genbench.cli import _parser, check_run_args, main
from genbench.errors import BudgetError


@pytest.mark.parametrize("text", ["1e400flop", "1e400steps", "1e400s"])
def test_an_infinite_budget_is_refused(text):
    with pytest.raises(BudgetError, match="infinite"):
        Budget.parse(text)


@pytest.mark.parametrize("flags, words", [
    (["--budget", ""], "--budget is empty"),
    (["--budget", "1e400flop"], "infinite"),
    (["--seeds", "10000000"], "more than 1000"),
    (["--device", "nosuch"], "not a device"),
    (["--device", "cuda:x"], "not a device"),
])
def test_bad_run_flags_cost_one_line_and_run_nothing(tmp_path, capsys, flags, words):
    runs = tmp_path / "runs"
    code = main(["run", "--model", "vae", "--dataset", "ring8", "--profile", "test", "--runs-dir", str(runs),
                 *flags])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 2 and words in text
    assert "Traceback" not in text and len(text.strip().splitlines()) <= 3
    assert not runs.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_is_refused_with_the_fix(tmp_path, capsys):
    code = main(["run", "--model", "vae", "--dataset", "ring8", "--device", "cuda", "--runs-dir", str(tmp_path)])
    text = capsys.readouterr().out
    assert code == 2 and "no CUDA device" in text and "--device cpu" in text


def test_a_runs_dir_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "runs"
    f.write_text("not a folder")
    code = main(["run", "--model", "vae", "--dataset", "ring8", "--runs-dir", str(f)])
    assert code == 2 and "is a file" in capsys.readouterr().out
    assert f.read_text() == "not a folder"


def test_repeated_models_and_datasets_are_kept_once():
    args = _parser().parse_args(["run", "--model", "vae", "--model", "gan", "--model", "vae",
                                 "--dataset", "ring8", "--dataset", "ring8"])
    check_run_args(args)
    assert args.model == ["vae", "gan"] and args.dataset == ["ring8"]
