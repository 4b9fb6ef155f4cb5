"""Command line: flag parsing, and both scripts' error boundary (bad input → exit 2, one `tunecv: error:` line)."""

from __future__ import annotations

import errno
import logging
import logging.handlers
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_MODEL, write_image_folder
from tunecv import cli
from tunecv.config import KEYS, load_config
from tunecv.errors import UserError
from tunecv.scripts import finetune, validate
from tunecv.tasks.classification import Classification


def _parse(argv: list[str]):
    return cli.parse_args(cli.build_parser("t", "t"), argv, script_flags=())


def _tiny_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["--data_dir", str(data_dir), "--model", TINY_MODEL, "--image_resize", "32", "--batch_size", "4",
            "--epoch_size", "1", "--num_parallel_workers", "0", "--device", "cpu", "--ckpt_save_dir", str(out),
            *extra]


def _error_lines(capsys) -> tuple[list[str], str]:
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith("tunecv: error:")], err


def _assert_one_error(capsys, *needles: str) -> str:
    lines, err = _error_lines(capsys)
    assert len(lines) == 1, err
    assert "Traceback" not in err and "usage:" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- parse_args ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--lr", "0.002"], ["--lr=0.002"]])
def test_value_flag(argv):
    _, overrides = _parse(argv)
    assert overrides == {"lr": "0.002"}


def test_bare_bool_flag_is_true():
    _, overrides = _parse(["--pretrained", "--lr", "0.1"])
    assert overrides == {"pretrained": "true", "lr": "0.1"}


def test_bool_flag_with_value(tmp_path):
    _, overrides = _parse(["--pretrained", "False"])
    assert overrides == {"pretrained": "False"}
    assert load_config(None, {**overrides, "data_dir": str(tmp_path)}).model.pretrained is False


@pytest.mark.parametrize("argv", [["--scale", "0.5", "1.0"], ["--scale", "0.5,1.0"], ["--scale=0.5,1.0"]])
def test_tuple_flag(tmp_path, argv):
    _, overrides = _parse(argv)
    assert load_config(None, {**overrides, "data_dir": str(tmp_path)}).data.scale == (0.5, 1.0)


def test_unknown_and_renamed_flags_go_to_the_config_layer(tmp_path):
    _, overrides = _parse(["--class_num", "5", "--mode", "0", "--lr", "0.1"])
    assert overrides == {"class_num": "5", "mode": "0", "lr": "0.1"}
    cfg = load_config(None, {**overrides, "data_dir": str(tmp_path)})
    assert cfg.model.num_classes == 5 and cfg.optim.lr == 0.1


def test_flags_override_yaml(yaml_config, tmp_path):
    path = yaml_config({"data_dir": str(tmp_path), "lr": 0.5, "opt": "sgd"})
    args, overrides = _parse(["--config", str(path), "--lr", "0.01"])
    cfg = load_config(args.config, overrides)
    assert cfg.optim.lr == 0.01 and cfg.optim.opt == "sgd"


@pytest.mark.parametrize("main", [finetune.main, validate.main], ids=["finetune", "validate"])
def test_help_lists_every_key(capsys, main):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    missing = [key for key in KEYS if f"--{key}" not in out and key != "ckpt_path"]
    assert not missing
    assert "--ckpt_path" in out


# --- finetune.py: bad input → exit 2 --------------------------------------------------------------------------------

def test_unknown_key_exit_2_one_line(capsys, tiny_image_folder, tmp_path):
    code = finetune.main(["--data_dir", str(tiny_image_folder), "--lrr", "0.1"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["tunecv: error: unknown config key 'lrr' (command line); did you mean 'lr'?"]


def test_unknown_key_in_yaml_names_file(capsys, yaml_config, tiny_image_folder):
    path = yaml_config({"data_dir": str(tiny_image_folder), "batchsize": 4})
    assert finetune.main(["--config", str(path)]) == 2
    _assert_one_error(capsys, "'batchsize'", str(path), "did you mean 'batch_size'")


def test_stray_positional_argument_exit_2(capsys, tiny_image_folder):
    assert finetune.main(["--data_dir", str(tiny_image_folder), "oops"]) == 2
    _assert_one_error(capsys, "'oops'")


def test_missing_data_dir_exit_2(capsys, tmp_path):
    assert finetune.main(["--ckpt_save_dir", str(tmp_path / "ckpt")]) == 2
    _assert_one_error(capsys, "data_dir")


def test_data_dir_that_does_not_exist_exit_2(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    assert finetune.main(_tiny_args(missing, tmp_path / "ckpt")) == 2
    _assert_one_error(capsys, str(missing))


def test_missing_train_split_exit_2(capsys, tmp_path):
    root = tmp_path / "data"
    (root / "val" / "a").mkdir(parents=True)
    assert finetune.main(_tiny_args(root, tmp_path / "ckpt")) == 2
    _assert_one_error(capsys, str(root / "train"), "found: val")


def test_empty_class_folder_exit_2(capsys, tiny_image_folder, tmp_path):
    empty = tiny_image_folder / "train" / "empty_class"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    assert finetune.main(_tiny_args(tiny_image_folder, tmp_path / "ckpt")) == 2
    _assert_one_error(capsys, str(empty))


@pytest.mark.parametrize("name, content", [("broken.jpg", b"\x00garbage bytes, not a JPEG" * 10),
                                           ("empty.png", b"")])
def test_corrupt_image_exit_2_naming_file(capsys, tiny_image_folder, tmp_path, name, content):
    bad = tiny_image_folder / "train" / "square" / name
    bad.write_bytes(content)
    argv = _tiny_args(tiny_image_folder, tmp_path / "ckpt", "--on_bad_image", "error")
    assert finetune.main(argv) == 2
    _assert_one_error(capsys, str(bad), "on_bad_image")
    assert not (tmp_path / "ckpt" / f"{TINY_MODEL}_last.pth").exists()  # failed before training


@pytest.mark.parametrize("name, content", [("broken.jpg", b"not a jpeg at all"), ("empty.png", b"")])
def test_unreadable_image_skipped_and_listed(capsys, tiny_image_folder, tmp_path, name, content):
    bad = tiny_image_folder / "train" / "square" / name
    bad.write_bytes(content)
    out = tmp_path / "ckpt"
    assert finetune.main(_tiny_args(tiny_image_folder, out)) == 0
    assert f"skipping unreadable image {bad}" in capsys.readouterr().err
    listed = (out / "bad_images.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{bad}\t")


def test_truncated_image_in_worker_exit_2_naming_file(capsys, tiny_image_folder, tmp_path):
    # the header is fine: the start-up scan decodes it, and on_bad_image: error stops there
    from PIL import Image

    bad = tiny_image_folder / "train" / "circle" / "truncated.jpg"
    Image.new("RGB", (40, 40), (200, 10, 10)).save(bad, quality=95)
    data = bad.read_bytes()
    bad.write_bytes(data[:data.index(b"\xff\xda") + 20])  # keep the headers, cut the scan data
    code = finetune.main(_tiny_args(tiny_image_folder, tmp_path / "ckpt", "--num_parallel_workers", "1",
                                    "--on_bad_image", "error"))
    assert code == 2
    _assert_one_error(capsys, str(bad))


def test_truncated_image_is_left_out_at_the_scan_and_listed_once(capsys, tiny_image_folder, tmp_path):
    from PIL import Image

    bad = tiny_image_folder / "train" / "circle" / "truncated.jpg"
    Image.new("RGB", (40, 40), (200, 10, 10)).save(bad, quality=95)
    data = bad.read_bytes()
    bad.write_bytes(data[:data.index(b"\xff\xda") + 20])  # the header is fine: only decoding finds it
    out = tmp_path / "ckpt"
    assert finetune.main(_tiny_args(tiny_image_folder, out, "--num_parallel_workers", "1")) == 0
    listed = (out / "bad_images.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{bad}\t")
    log = (out / "train.log").read_text()
    assert "train 24 images" in log and log.count(str(bad)) == 1  # the 24 that train; warned once, at the scan
    rows = (out / "results.txt").read_text().splitlines()
    assert len(rows) == 3 and rows[-1].startswith("best top1 ")


def test_num_classes_mismatch_exit_2(capsys, tiny_image_folder, tmp_path):
    assert finetune.main(_tiny_args(tiny_image_folder, tmp_path / "ckpt", "--num_classes", "5")) == 2
    _assert_one_error(capsys, "num_classes", "5", "3")


def test_renamed_class_num_mismatch_exit_2(capsys, tiny_image_folder, tmp_path):
    assert finetune.main(_tiny_args(tiny_image_folder, tmp_path / "ckpt", "--class_num", "2")) == 2
    _assert_one_error(capsys, "num_classes")


def test_invalid_choice_exit_2(capsys, tiny_image_folder, tmp_path):
    assert finetune.main(_tiny_args(tiny_image_folder, tmp_path / "ckpt", "--opt", "sgdd")) == 2
    _assert_one_error(capsys, "opt", "did you mean 'sgd'")


def test_no_training_batch_exit_2(capsys, tiny_image_folder, tmp_path):
    code = finetune.main(_tiny_args(tiny_image_folder, tmp_path / "ckpt", "--batch_size", "64",
                                    "--drop_remainder"))
    assert code == 2
    _assert_one_error(capsys, "batch_size")


def test_print_config_prints_yaml_and_exits_0(capsys, tiny_image_folder, tmp_path):
    code = finetune.main(_tiny_args(tiny_image_folder, tmp_path / "ckpt", "--lr", "0.0123", "--print_config"))
    assert code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["lr"] == 0.0123 and printed["model"] == TINY_MODEL and printed["image_resize"] == 32
    assert printed["data_dir"] == str(tiny_image_folder)
    assert not (tmp_path / "ckpt").exists()  # nothing written


# --- validate.py: bad input → exit 2 --------------------------------------------------------------------------------

def test_validate_missing_checkpoint_exit_2(capsys, tmp_path):
    missing = tmp_path / "none.pth"
    assert validate.main(["--ckpt_path", str(missing)]) == 2
    _assert_one_error(capsys, str(missing), "not found")


def test_validate_plain_state_dict_is_not_a_tunecv_checkpoint(capsys, tmp_path):
    path = tmp_path / "plain.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    assert validate.main(["--ckpt_path", str(path)]) == 2
    _assert_one_error(capsys, str(path), "not a tunecv checkpoint")


def test_validate_garbage_file_exit_2(capsys, tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"this is not a checkpoint")
    assert validate.main(["--ckpt_path", str(path)]) == 2
    _assert_one_error(capsys, str(path))


# --- in-process happy path ------------------------------------------------------------------------------------------

def test_finetune_then_validate_in_process(capsys, tiny_image_folder, tmp_path):
    out = tmp_path / "ckpt"
    assert finetune.main(_tiny_args(tiny_image_folder, out)) == 0
    summary = capsys.readouterr().out
    best = out / f"{TINY_MODEL}_best.pth"
    assert str(best) in summary and best.is_file()

    pred = tmp_path / "train_pred.txt"
    assert validate.main(["--ckpt_path", str(best), "--split", "train", "--output", str(pred)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("24 images:") and f"predictions: {pred}" in printed
    rows = pred.read_text().splitlines()
    assert rows[0] == "path\tpred_label\ttrue_label\tscore" and len(rows) == 1 + 24

    # a class the checkpoint does not know → exit 2
    other = write_image_folder(tmp_path / "other", classes=("circle", "triangle"))
    assert validate.main(["--ckpt_path", str(best), "--data_dir", str(other)]) == 2
    _assert_one_error(capsys, "triangle")


def test_print_config_output_loads_back_to_the_same_config(capsys, tiny_image_folder, tmp_path):
    args = _tiny_args(tiny_image_folder, tmp_path / "ckpt", "--lr", "3e-4", "--scale", "0.5", "1.0", "--mode", "0")
    assert finetune.main([*args, "--print_config"]) == 0
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    _, overrides = _parse(args)
    task = Classification()  # what it printed: the config with the values the model gives
    assert load_config(printed) == task.resolve_config(load_config(None, overrides))


def test_missing_val_split_is_an_error_unless_validation_is_off(capsys, tiny_image_folder, tmp_path):
    import shutil

    shutil.rmtree(tiny_image_folder / "val")
    out = tmp_path / "ckpt"
    assert finetune.main(_tiny_args(tiny_image_folder, out)) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tunecv: error:")]
    assert len(errors) == 1 and "val does not exist" in errors[0] and "--val_while_train false" in errors[0]
    assert finetune.main(_tiny_args(tiny_image_folder, out) + ["--val_while_train", "false"]) == 0
    captured = capsys.readouterr()
    assert "no validation set; last epoch 1" in captured.out
    lines = (out / "results.txt").read_text().splitlines()
    assert lines[1].split()[3:6] == ["-", "-", "-"] and lines[-1] == "best top1 - at epoch 1"
    assert (out / f"{TINY_MODEL}_best.pth").is_file()


@pytest.mark.parametrize("argv, needle", [
    (["--min_lr", "-1e-6"], "min_lr must be"),           # a negative number is a value, not a flag
    (["--mean"], "--mean"),                              # a flag without its value
    (["--scale", "0.08", "1.0]"], "scale"),              # a list that does not parse
    (["--batch_size", "3", "--mixup", "0.2"], "even batch_size"),
    (["--hflip", "1.5"], "hflip must be between 0 and 1"),
    (["--image_resize", ""], "image_resize"),
])
def test_bad_command_line_is_one_error_line(capsys, tiny_image_folder, tmp_path, argv, needle):
    assert finetune.main(_tiny_args(tiny_image_folder, tmp_path / "ckpt") + argv) == 2
    _assert_one_error(capsys, needle)


def test_validate_without_ckpt_path_is_one_error_line(capsys):
    assert validate.main([]) == 2
    _assert_one_error(capsys, "--ckpt_path")


def test_renamed_list_key_takes_several_values(tiny_image_folder):
    parser = cli.build_parser("finetune.py", "")
    _, overrides = cli.parse_args(parser, ["--milestones", "30", "60", "--data_dir", str(tiny_image_folder)], ())
    cfg = load_config(None, overrides)
    assert cfg.sched.multi_step_decay_milestones == (30, 60)


def test_fixed_size_model_with_another_image_size_is_an_error(capsys, tiny_image_folder, tmp_path):
    argv = _tiny_args(tiny_image_folder, tmp_path / "ckpt") + ["--model", "pit_ti_224"]
    assert finetune.main(argv) == 2
    _assert_one_error(capsys, "takes 224 px inputs only", "image_resize 224")


class _FullDisk:
    """A log file stream whose writes fail as on a full disk (fault injection at the write)."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        pass


def test_full_disk_stops_the_log_file_with_one_warning(tmp_path, capsys):
    log_file = tmp_path / "run" / "train.log"
    cli.setup_logging()
    cli.add_log_file(log_file)
    logger = logging.getLogger("tunecv.test")
    logger.info("epoch 1")
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, cli.LogFile))
    handler.stream = _FullDisk()
    for epoch in (2, 3, 4):
        logger.info("epoch %d", epoch)
    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    assert err.count(f"warning: stopped writing {log_file}: No space left on device") == 1
    assert err.count("epoch 4") == 1 and "epoch 1" in log_file.read_text()


def test_log_file_on_a_read_only_disk_is_one_error_line(tmp_path, monkeypatch):
    def read_only(self):
        raise OSError(errno.EROFS, "Read-only file system", self.baseFilename)
    monkeypatch.setattr(cli.LogFile, "_open", read_only)  # FileHandler opens the file on creation
    with pytest.raises(UserError, match=r"^cannot write .*train.log \(read-only file system\); "):
        cli.add_log_file(tmp_path / "train.log")


# --- logging: -v is tunecv's debug lines only; what is logged before train.log opens is written to it first -----

@pytest.fixture
def tunecv_logger_level():
    """setup_logging sets the `tunecv` logger's own level; give the next test the one it had."""
    logger = logging.getLogger("tunecv")
    level = logger.level
    yield
    logger.setLevel(level)


def test_verbose_shows_tunecv_debug_lines_but_not_other_libraries(tmp_path, capsys, tunecv_logger_level):
    cli.setup_logging(verbose=True)
    log_file = tmp_path / "train.log"
    for name in ("PIL.PngImagePlugin", "matplotlib.font_manager", "urllib3.connectionpool"):
        logging.getLogger(name).debug("library noise from %s", name)
        logging.getLogger(name).info("library chatter from %s", name)
    logging.getLogger("tunecv.data").debug("our detail")
    cli.add_log_file(log_file)
    logging.getLogger("PIL.Image").debug("more library noise")
    logging.getLogger("tunecv.train").debug("our later detail")
    logging.getLogger("urllib3").warning("a library warning")
    err, text = capsys.readouterr().err, log_file.read_text()
    for shown in (err, text):
        assert "our detail" in shown and "our later detail" in shown and "a library warning" in shown
        assert "library noise" not in shown
    assert logging.getLogger().level == logging.INFO


def test_without_verbose_tunecv_debug_lines_stay_hidden(tmp_path, capsys, tunecv_logger_level):
    cli.setup_logging(verbose=True)
    cli.setup_logging()  # a second setup (another command in the same process) forgets the first's -v
    logging.getLogger("tunecv.data").debug("our detail")
    cli.add_log_file(tmp_path / "train.log")
    assert "our detail" not in capsys.readouterr().err + (tmp_path / "train.log").read_text()


def test_records_before_the_log_file_opens_are_written_to_it_first(tmp_path, capsys):
    cli.setup_logging(quiet=True)  # the file keeps INFO lines the quiet console does not show
    logger = logging.getLogger("tunecv.test")
    logger.info("config checked")
    logger.warning("an early warning")
    cli.add_log_file(tmp_path / "run" / "train.log")
    logger.info("epoch 1")
    lines = (tmp_path / "run" / "train.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "INFO tunecv.test: config checked", "WARNING tunecv.test: an early warning", "INFO tunecv.test: epoch 1"]
    assert "config checked" not in capsys.readouterr().err

    cli.add_log_file(tmp_path / "other.log")  # a replacement starts empty: the early records went to the first
    logger.info("epoch 2")
    assert (tmp_path / "other.log").read_text().count("tunecv.test") == 1
    assert "epoch 2" not in (tmp_path / "run" / "train.log").read_text()


def test_early_records_are_bounded_and_the_rest_counted(tmp_path):
    early = cli._EarlyRecords(capacity=3)
    logger = logging.getLogger("tunecv.test.bounded")
    logger.addHandler(early)
    try:
        for i in range(5):
            logger.warning("line %d", i)
    finally:
        logger.removeHandler(early)
    kept = logging.handlers.BufferingHandler(10)
    early.replay(kept)
    assert [r.getMessage() for r in kept.buffer] == [
        "line 0", "line 1", "line 2", "2 log lines from before this file was opened were not kept"]
    assert early.buffer == []


def test_early_records_go_nowhere_when_no_log_file_opens(tmp_path):
    code = ("import logging; from tunecv import cli; cli.setup_logging(); "
            "logging.getLogger('tunecv.x').info('only on the console')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["only on the console"] and proc.stdout == ""
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, line", [
    (["--learning-rate", "0.1"], "unknown config key 'learning_rate' (command line); 'learning_rate' is called 'lr' "
                                 "here (the name in Hugging Face's Trainer and PaddleClas)"),
    (["--sched", "cosine"], "unknown config key 'sched' (command line); 'sched' is called 'scheduler' here (the "
                            "name in timm's train.py)"),
])
def test_other_tools_flags_are_one_error_line_naming_ours(capsys, tmp_path, argv, line):
    assert finetune.main(["--data_dir", str(tmp_path), *argv]) == 2
    assert capsys.readouterr().err.splitlines() == [f"tunecv: error: {line}"]


def test_hyphenated_flags_are_the_keys(capsys, tmp_path):
    assert finetune.main(["--dataset", "digits", "--batch-size", "8", "--label-smoothing", "0.2",
                          "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "batch_size: 8" in out and "label_smoothing: 0.2" in out


def test_binary_config_file_is_one_error_line(capsys, tmp_path):
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"PK\x03\x04\x14\x00\x00\x08\x08\x00\x9c\xff\xfe")
    assert finetune.main(["--config", str(weights)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tunecv: error: config file {weights} is not UTF-8 text (byte 0x9c at offset 10); give a YAML text file, "
        "saved as UTF-8"]
