"""What `_last` holds and putting it back: the best epochs under their old and new names; a `_last` of an older
format is refused in one sentence, not a traceback."""

from __future__ import annotations

import pytest
import torch

from tunecv.errors import UserError
from tunecv.train.checkpoint import save_checkpoint
from tunecv.train.resume import RESUME_KEYS, training_checkpoint
from tunecv.train.state import Best, RunFinished, best_words, check_epochs_left, saved_best, trained_epochs


def test_the_best_epoch_loads_under_its_old_and_new_name():
    assert saved_best({"value": 91.5, "epoch": 3, "path": "a_best.pth"}) == Best(91.5, 3, "a_best.pth")
    assert saved_best({"top1": 88.0, "epoch": 2, "path": "b_best.pth"}) == Best(88.0, 2, "b_best.pth")


def _last(tmp_path, **extra):
    path = tmp_path / "net_last.pth"
    save_checkpoint({"model": {"w": torch.zeros(1)}, "config": {}, "classes": ["a", "b"], "epoch": 1,
                     "optimizer": {}, "rng": [], **extra}, path)
    return path


def test_a_last_checkpoint_of_an_older_format_is_refused_in_one_sentence(tmp_path):
    with pytest.raises(UserError, match="written by an older tunecv .*phase_start.*--ckpt_path") as err:
        training_checkpoint(_last(tmp_path, history=[], best={}, ema_best={}, global_step=4))
    assert "\n" not in str(err.value)
    complete = training_checkpoint(_last(tmp_path, **{key: 0 for key in RESUME_KEYS}))
    assert complete["epoch"] == 1


def _finished(epoch: int, progress: dict | None = None) -> dict:
    return {"epoch": epoch, "epoch_progress": progress, "best": {"value": 91.25, "epoch": 2, "path": "x"},
            "config": {"best_metric": "top1", "epoch_size": 3}}


def test_a_resume_with_no_epoch_left_stops_before_anything_is_written(tmp_path):
    last = tmp_path / "run" / "net_last.pth"
    with pytest.raises(RunFinished, match=r"the run in .*run finished at epoch 3, best top-1 91.25 % at epoch 2; "
                                          r"nothing to resume: to train further, add --epoch_size N \(more than 3\)"):
        check_epochs_left(_finished(3), 3, last)
    with pytest.raises(UserError, match="has trained 3 epochs, more than epoch_size 2; pass --epoch_size 4 or more"):
        check_epochs_left(_finished(3), 2, last)
    check_epochs_left(_finished(3), 5, last)  # extended: epochs 4 and 5 to go
    check_epochs_left(_finished(3, {"batches": 2}), 3, last)  # stopped inside epoch 3: its rest to go
    with pytest.raises(UserError, match="has trained 3 epochs and part of epoch 4, more than epoch_size 3"):
        check_epochs_left(_finished(4, {"batches": 2}), 3, last)
    assert trained_epochs(_finished(3, {"batches": 2})) == 2


def test_best_words_name_the_metric():
    assert best_words("top1", Best(98.333, 2)) == ", best top-1 98.33 % at epoch 2"
    assert best_words("bbox_mAP", Best(0.41, 5)) == ", best bbox_mAP 0.41 at epoch 5"
    assert best_words("top1", Best()) == ""


def test_a_resume_that_would_train_other_parameters_is_named_before_anything_runs():
    from tunecv.train.resume import changed_training_keys

    saved = {"freeze": None, "layer_decay": 0.8, "lr_scales": [["head", 10.0]], "opt": "adamw"}
    flat = {"freeze": "all", "layer_decay": 0.8, "lr_scales": (("head", 10.0),), "opt": "sgd"}
    assert changed_training_keys(saved, flat) == ["freeze None -> 'all'", "opt 'adamw' -> 'sgd'"]
