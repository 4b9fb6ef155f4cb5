"""The search space's syntax: choices typed as their key, ranges (int, float, log), and each mistake as one
sentence that names the problem and the fix; the combinations of values checked up front."""

from __future__ import annotations

import pytest

from tunecv.errors import UserError
from tunecv.search.space import Param, check_not_flags, corners, describe, format_value, parse_param, parse_space


def test_choices_are_typed_as_their_key():
    assert parse_param("strategy=linear_probe,lp_ft,full") == Param("strategy", "choice",
                                                                    ("linear_probe", "lp_ft", "full"))
    assert parse_param("batch_size=16,32").choices == (16, 32)
    assert parse_param("ema=true,false").choices == (True, False)
    assert parse_param("lr=0.01,1e-3").choices == (0.01, 0.001)
    assert parse_param("eps=none,1e-8").choices == (None, 1e-8)  # an optional key takes none
    assert parse_param("opt=SGD,adamw").choices == ("sgd", "adamw")  # the config's own spelling
    assert parse_param("lr=auto,0.01").choices == ("auto", 0.01)  # a key's literal word
    assert parse_param("strategy=freeze:2").choices == ("freeze:2",)  # one value, its colon its own


def test_ranges():
    assert parse_param("label_smoothing=0:0.2") == Param("label_smoothing", "float", low=0.0, high=0.2)
    assert parse_param("label_smoothing=0:1") == Param("label_smoothing", "float", low=0.0, high=1.0)  # float key
    assert parse_param("lr=log:1e-4:1e-1") == Param("lr", "float", low=1e-4, high=0.1, log=True)
    int_range = parse_param("epoch_size=2:8")
    assert int_range == Param("epoch_size", "int", low=2, high=8) and isinstance(int_range.low, int)
    assert parse_param("batch_size=log:8:64") == Param("batch_size", "int", low=8, high=64, log=True)


def test_key_spellings_are_the_flags():
    assert parse_param("batch-size=8,16").key == "batch_size"
    assert parse_param("epochs=2:4").key == "epoch_size"  # another tool's name, as a flag reads it
    assert list(parse_space(["lr=log:1e-4:1e-1", "label-smoothing=0:0.2"])) == ["lr", "label_smoothing"]


def test_canonical_spec_and_display():
    space = parse_space(["lr=log:1e-4:1e-1", "strategy=full,linear_probe", "ema=true,false", "eps=none,1e-8"])
    assert {key: param.spec() for key, param in space.items()} == {
        "lr": "log:0.0001:0.1", "strategy": "full,linear_probe", "ema": "true,false", "eps": "none,1e-08"}
    assert format_value(0.0031234) == "0.00312" and format_value(None) == "none" and format_value(True) == "true"
    assert describe({"lr": 0.0031234, "strategy": "full"}) == "lr=0.00312 strategy=full"


@pytest.mark.parametrize("specs, message", [
    (["lr"], "--search 'lr' is not key=values; write key=a,b,c"),
    (["=1,2"], "is not key=values"),
    (["lr="], "--search lr= gives lr no values; write key=a,b,c"),
    (["lrr=0.1,0.2"], "unknown config key 'lrr' (--search); did you mean 'lr'?"),
    (["lr=0.1:0.01"], "the range's low end must be below its high end; write lr=0.01:0.1"),
    (["lr=0.1:0.1"], "the range's low end must be below its high end; give two different ends"),
    (["lr=log:0:0.1"], "a log-scaled range needs ends above 0; start it at a small positive number"),
    (["lr=log:-1:0.1"], "a log-scaled range needs ends above 0"),
    (["lr=0.1:x"], "'x' is not a number; give the range two numbers"),
    (["lr=0.1:0.2:0.3"], "is not a range; write lr=lo:hi or lr=log:lo:hi"),
    (["epoch_size=1:5.5"], "epoch_size takes integers; give integer ends (epoch_size=1:6)"),
    (["lr=0.1,,0.2"], "has an empty choice; remove the extra comma"),
    (["lr=0.1,"], "has an empty choice"),
    (["lr=0.1,0.1"], "lists '0.1' twice; give each choice once"),
    (["lr=fast,0.1"], "lr = 'fast' (--search lr=fast,0.1) is not a valid number; give lr a number"),
    (["opt=adamx,sgd"], "opt = 'adamx' (--search opt=adamx,sgd) is not a choice tunecv knows; did you mean 'adamax' "
                        "or 'adam'"),
    (["opt=adahessian,sgd"], "opt = 'adahessian' (--search opt=adahessian,sgd) cannot be used: it needs a "
                             "second-order backward pass"),
    (["freeze=a:b"], "freeze = 'a:b' (--search freeze=a:b) is not a choice tunecv knows"),
    (["pretrained=0:1"], "pretrained = '0:1' (--search pretrained=0:1) is not a valid boolean (true/false)"),
    (["pretrained=log:1:2"], "pretrained is a boolean (true/false), not a number, so it has no range; list its "
                             "choices (pretrained=a,b,c)"),
    (["lr=0.1,0.2", "lr=log:1e-4:1e-1"], "lr is searched twice (--search lr=0.1,0.2 and lr=log:1e-4:1e-1); "
                                         "give it once"),
    (["batch_size=8,16", "batch-size=32,64"], "batch_size is searched twice"),
    (["ckpt_save_dir=a,b"], "ckpt_save_dir cannot be searched (each trial's run folder is"),
    (["resume=auto"], "resume cannot be searched"),
    (["device_target=a,b"], "is a MindCV key tunecv ignores"),
    ([], "--search names no key"),
])
def test_mistakes_are_one_sentence(specs, message):
    with pytest.raises(UserError) as caught:
        parse_space(specs)
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_a_key_is_given_or_searched_not_both():
    space = parse_space(["lr=log:1e-4:1e-1", "batch_size=8,16"])
    check_not_flags(space, ["epoch_size", "model"])
    with pytest.raises(UserError, match=r"^lr is both given \(--lr\) and searched \(--search lr=log:0.0001:0.1\); "
                                        "drop one of them$"):
        check_not_flags(space, ["lr"])
    with pytest.raises(UserError, match="batch_size is both given"):
        check_not_flags(space, ["batch-size"])


def test_corners_are_every_combination_of_choices_and_range_ends():
    space = parse_space(["strategy=linear_probe,full", "freeze_epochs=1:3", "lr=log:1e-4:1e-1"])
    combos = corners(space, limit=32)
    assert len(combos) == 8 and combos[0] == {"strategy": "linear_probe", "freeze_epochs": 1, "lr": 1e-4}
    assert combos[-1] == {"strategy": "full", "freeze_epochs": 3, "lr": 0.1}
    assert {tuple(c.values()) for c in combos} == {(s, f, lr) for s in ("linear_probe", "full") for f in (1, 3)
                                                   for lr in (1e-4, 0.1)}


def test_a_large_space_checks_a_fixed_sample_of_its_corners():
    space = parse_space([f"{key}=1,2,3,4,5" for key in ("batch_size", "epoch_size", "warmup_epochs", "seed")] +
                        ["lr=0.1:0.2"])  # 1250 combinations
    combos = corners(space, limit=32)
    assert len(combos) == 32 and len({tuple(c.values()) for c in combos}) == 32
    assert combos == corners(space, limit=32)  # the same sample every time
    assert all(set(c) == set(space) and c["lr"] in (0.1, 0.2) for c in combos)
