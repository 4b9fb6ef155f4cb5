"""What `_last` holds and putting it back: the best epochs under their old and new names; a `_last` of an older
format is refused in one sentence, not a traceback."""

from __future__ import annotations

import pytest
import torch

from tunecv.errors import UserError
from tunecv.train.checkpoint import save_checkpoint
from tunecv.train.resume import RESUME_KEYS, training_checkpoint
from tunecv.train.state import Best, saved_best


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
