"""The sweep's reports from its trials: sweep.csv's rows, the console's lines and ranked table, best.yaml, and
sweep.png."""

from __future__ import annotations

import csv

import pytest
import yaml

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState, create_trial  # noqa: E402

from tunecv.search import report  # noqa: E402
from tunecv.search.plot import plot_sweep  # noqa: E402
from tunecv.search.space import parse_space  # noqa: E402

SPACE = parse_space(["lr=log:1e-4:1e-1", "strategy=full,linear_probe"])
DISTRIBUTIONS = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                 "strategy": optuna.distributions.CategoricalDistribution(["full", "linear_probe"])}


def _trial(number: int, state: TrialState, lr: float, strategy: str, value: float | None = None,
           intermediate: dict[int, float] | None = None, **attrs):
    trial = create_trial(state=state, value=value, params={"lr": lr, "strategy": strategy},
                         distributions=DISTRIBUTIONS, user_attrs=attrs, intermediate_values=intermediate or {})
    trial.number = number
    return trial


@pytest.fixture
def trials(tmp_path):
    return [
        _trial(0, TrialState.COMPLETE, 0.001, "full", 90.0, {1: 80.0, 2: 90.0}, best_epoch=2, time_s=41.2,
               folder=str(tmp_path / "trial_000")),
        _trial(1, TrialState.PRUNED, 0.05, "linear_probe", None, {1: 30.0, 2: 35.0}, pruned_epoch=2, time_s=9.0,
               folder=str(tmp_path / "trial_001")),
        _trial(2, TrialState.FAIL, 0.002, "full", folder=str(tmp_path / "trial_002")),
        _trial(3, TrialState.COMPLETE, 0.0003, "linear_probe", 95.5, {1: 95.5}, best_epoch=1, time_s=12.0,
               folder=str(tmp_path / "trial_003")),
        _trial(4, TrialState.COMPLETE, 0.0003, "linear_probe", 95.5, {}, best_epoch=1, time_s=0.0, same_as=3),
        _trial(5, TrialState.FAIL, 0.01, "full", surplus=True),
    ]


def test_rows_and_csv(trials, tmp_path):
    rows = report.trial_rows(trials, SPACE, "top1")
    assert [(r["number"], r["state"], r["top1"], r["best_epoch"]) for r in rows] == [
        (0, "complete", 90.0, 2), (1, "pruned", 35.0, 2), (2, "fail", None, None), (3, "complete", 95.5, 1),
        (4, "complete", 95.5, 1)]  # the surplus trial, which ran nothing, is left out
    path = tmp_path / "sweep.csv"
    report.write_csv(rows, report.csv_columns(SPACE, "top1"), path)
    table = list(csv.DictReader(path.open()))
    assert list(table[0]) == ["number", "state", "lr", "strategy", "top1", "best_epoch", "time_s", "run_folder",
                              "same_as"]
    assert table[4]["same_as"] == "3" and table[4]["run_folder"] == "" and table[2]["top1"] == ""
    assert float(table[0]["lr"]) == 0.001 and table[0]["run_folder"].endswith("trial_000")


def test_console_lines(trials):
    best = trials[3]
    assert report.trial_line(trials[0], SPACE, "top1", best, (1, 12)) == \
        "trial 0 [1/12]: lr=0.001 strategy=full: top-1 90.00 % (best 95.50 %, trial 3) 41 s"
    assert report.trial_line(trials[1], SPACE, "top1", best, (2, 12)) == \
        "trial 1 [2/12]: lr=0.05 strategy=linear_probe: pruned at epoch 2 (top-1 35.00 %) 9 s"
    assert report.trial_line(trials[4], SPACE, "top1", best, (5, 12)) == \
        "trial 4 [5/12]: lr=0.0003 strategy=linear_probe: the values of trial 3, top-1 95.50 % (not trained again)"
    diverged = _trial(6, TrialState.PRUNED, 0.1, "full", diverged="epoch 1 step 3: the weights became nan/inf",
                      time_s=2.0, retry_of=2)
    assert report.trial_line(diverged, SPACE, "top1", best, (6, 12)) == \
        "trial 6 [6/12] (retry of trial 2): lr=0.1 strategy=full: diverged (epoch 1 step 3: the weights became " \
        "nan/inf) 2 s"


def test_ranked_table_best_first(trials):
    table = report.ranked_table(report.trial_rows(trials, SPACE, "top1"), SPACE, "top1", top=2).splitlines()
    assert table[0].split() == ["rank", "trial", "top-1", "lr", "strategy", "epoch", "time"]
    assert table[1].split() == ["1", "3", "95.50", "%", "0.0003", "linear_probe", "1", "12", "s"]
    assert table[2].split() == ["2", "4", "95.50", "%", "0.0003", "linear_probe", "1", "-"]
    assert len(table) == 3


def test_best_yaml_is_the_trials_config_as_a_new_run(trials, tmp_path):
    (tmp_path / "trial_003").mkdir()
    run_config = {"model": "m", "lr": 0.0003, "strategy": "linear_probe", "ckpt_save_dir": "x", "resume": None,
                  "overwrite": False}
    (tmp_path / "trial_003" / "config.yaml").write_text(yaml.safe_dump(run_config))
    # the best is trial 4, a repeat of trial 3: its config is trial 3's
    best = report.best_config(trials[4], trials, tmp_path, fallback=lambda params: pytest.fail("not needed"))
    assert best == {**run_config, "ckpt_save_dir": str(tmp_path / "best"), "resume_force": False}
    elsewhere = report.best_config(trials[0], trials, tmp_path, fallback=lambda params: {"model": "m", **params})
    assert elsewhere["lr"] == 0.001 and elsewhere["ckpt_save_dir"] == str(tmp_path / "best")  # no folder here
    path = tmp_path / "best.yaml"
    report.write_best_yaml(best, trials[4], SPACE, "top1", path)
    text = path.read_text()
    assert text.startswith("# the recipe search's best trial: trial 4, top-1 95.50 %\n")
    assert yaml.safe_load(text) == best


def test_sweep_png(trials, tmp_path):
    path = plot_sweep(report.trial_rows(trials, SPACE, "top1"), SPACE, "top1", tmp_path / "sweep.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert plot_sweep([], SPACE, "top1", tmp_path / "empty.png").is_file()  # before any trial finished


def test_a_searched_auto_shows_what_it_chose(tmp_path):
    space = parse_space(["lr=log:1e-4:1e-1", "strategy=auto,full"])
    distributions = {**DISTRIBUTIONS, "strategy": optuna.distributions.CategoricalDistribution(["auto", "full"])}
    chose = create_trial(state=TrialState.COMPLETE, value=96.0, params={"lr": 0.003, "strategy": "auto"},
                         distributions=distributions, user_attrs={"auto_chose": "linear_probe", "best_epoch": 1,
                                                                  "time_s": 5.0})
    full = create_trial(state=TrialState.COMPLETE, value=94.0, params={"lr": 0.001, "strategy": "full"},
                        distributions=distributions, user_attrs={"best_epoch": 2, "time_s": 9.0})
    chose.number, full.number = 0, 1
    rows = report.trial_rows([chose, full], space, "top1")
    assert report.csv_columns(space, "top1")[2:5] == ["lr", "strategy", "auto_chose"]
    assert [(r["strategy"], r["auto_chose"]) for r in rows] == [("auto", "linear_probe"), ("full", None)]
    table = report.ranked_table(rows, space, "top1").splitlines()
    assert "auto (linear_probe)" in table[1] and table[2].split()[5] == "full"
    assert "(auto chose linear_probe):" in report.trial_line(chose, space, "top1", chose, (1, 2))
    assert plot_sweep(rows, space, "top1", tmp_path / "sweep.png").is_file()
