"""Dispatch of a suite's trials: the longest first, and trials that need a feature extractor held
back while the reference rows build it beside the trials that do not."""

import collections
from types import SimpleNamespace

from genbench.budget import Budget
from genbench.executors.local import _next_free
from genbench.manager import PluginManager
from genbench.suite import dispatch_order


def job(index, model, dataset, budget="15s", profile="quick"):
    trial = SimpleNamespace(model=model, dataset=dataset, budget=Budget.parse(budget), profile=profile, seed=0)
    return SimpleNamespace(index=index, trial=trial)


def test_longest_first_from_the_suite_history_else_from_what_scores_the_trial():
    manager = PluginManager()
    jobs = [job(0, "gan", "ring8"), job(1, "vae", "digits"), job(2, "gan", "digits"), job(3, "vae", "ring8", "30s")]
    # no history: the 30 s budget first, then images with a decoder and a latent code, then images, then points
    assert [j.index for j in dispatch_order(jobs, manager, [])] == [3, 1, 2, 0]
    history = [{"model": "gan", "dataset": "ring8", "profile": "quick", "timings": {"eval_s": 40.0}},
               {"model": "gan", "dataset": "ring8", "profile": "quick", "timings": {"eval_s": 20.0}},
               {"model": "vae", "dataset": "digits", "profile": "test", "timings": {"eval_s": 99.0}},  # other profile
               {"model": "gan", "dataset": "digits", "timings": "not a dict"}]
    # gan on ring8 took 30 s to evaluate before: 45 s in all, longer than the 30 s vae on ring8
    assert [j.index for j in dispatch_order(jobs, manager, history)] == [0, 3, 1, 2]


def test_a_held_job_is_passed_over_for_the_next_free_one_and_taken_once_released():
    pending = collections.deque([job(0, "vae", "digits"), job(1, "gan", "digits"), job(2, "gan", "ring8")])
    released = False

    def held(j):
        return j.trial.dataset == "digits" and not released

    assert _next_free(pending, held).index == 2
    assert _next_free(pending, held) is None and len(pending) == 2
    released = True
    assert [_next_free(pending, held).index, _next_free(pending, held).index] == [0, 1]
    assert _next_free(pending, None) is None
