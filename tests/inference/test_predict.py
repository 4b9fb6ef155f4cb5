"""predict.py: image files, folders and patterns in; top-k classes per image out (stdout, .csv, .json); its
top-1 is validate.py's on the same images; files that do not decode are listed and skipped."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_script
from tunecv.errors import UserError
from tunecv.inference.predict import collect_images


@pytest.fixture
def trained(trained_checkpoint) -> tuple[Path, Path]:
    return trained_checkpoint


def test_top1_is_validates_on_the_same_images(trained, tmp_path):
    data, ckpt = trained
    run_script("validate.py", "--ckpt_path", str(ckpt), "--data_dir", str(data), "--num_parallel_workers", "0",
         "--output", str(tmp_path / "pred.txt"))
    expected = {line.split("\t")[0]: line.split("\t")[1]
                for line in (tmp_path / "pred.txt").read_text().splitlines()[1:]}
    out = tmp_path / "preds.csv"
    proc = run_script("predict.py", "--ckpt_path", str(ckpt), str(data / "val"), "--topk", "2", "--output", str(out),
                "--num_parallel_workers", "0")
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert {row["path"]: row["class_1"] for row in rows} == expected
    assert all(float(row["score_1"]) >= float(row["score_2"]) and row["class_1"] != row["class_2"] for row in rows)
    assert len(proc.stdout.splitlines()) == len(expected)  # one stdout line per image


def test_bad_files_are_skipped_and_json_output(trained, tmp_path):
    _, ckpt = trained
    good = sorted((trained[0] / "val").rglob("*.png"))[:2]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    for path in good:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "preds.json"
    proc = run_script("predict.py", "--ckpt_path", str(ckpt), str(tmp_path / "*.png"), "--tta", "--topk", "3",
                "--output", str(out), "--num_parallel_workers", "0")
    records = json.loads(out.read_text())
    assert sorted(Path(r["path"]).name for r in records) == sorted(p.name for p in good)
    assert all(len(r["top"]) == 3 and 0.99 < sum(t["score"] for t in r["top"]) < 1.01 for r in records)
    assert "1 file skipped" in proc.stderr and "broken.png" in proc.stderr


def test_bad_arguments_are_one_line(trained, tmp_path):
    _, ckpt = trained
    for args, needle in (([str(tmp_path / "missing.jpg")], "no such file"), ([str(tmp_path)], "no image files"),
                         ([str(ckpt), "--output", "x.txt"], ".csv or .json")):
        proc = run_script("predict.py", "--ckpt_path", str(ckpt), *args, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert needle in proc.stderr.strip().splitlines()[-1]


def test_collect_images_from_files_folders_and_patterns(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/1.png", "a/deep/2.JPG", "a/notes.txt", "3.png"):
        (tmp_path / name).write_bytes(b"")
    found = collect_images([str(tmp_path / "3.png"), str(tmp_path / "a"), str(tmp_path / "*.png")])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["3.png", "a/1.png", "a/deep/2.JPG"]
    with pytest.raises(UserError, match="no such file"):
        collect_images([str(tmp_path / "*.gif")])


def test_calibrated_temperature_is_stored_and_used_by_predict(trained, tmp_path):
    data, original = trained
    ckpt = tmp_path / original.name
    ckpt.write_bytes(original.read_bytes())
    check = run_script("validate.py", "--ckpt_path", str(ckpt), "--data_dir", str(data), "--num_parallel_workers", "0",
                 "--calibrate")
    temperature = torch.load(ckpt, weights_only=True)["temperature"]
    assert abs(temperature - 1.0) > 0.01
    assert "calibration: temperature 1.000 ->" in check.stderr and "ECE" in check.stdout
    assert (tmp_path / "reliability.png").stat().st_size > 10_000
    scores = {line.split("\t")[0]: float(line.split("\t")[3])
              for line in (tmp_path / "pred.txt").read_text().splitlines()[1:]}
    out = tmp_path / "preds.json"
    run_script("predict.py", "--ckpt_path", str(ckpt), str(data / "val"), "--output", str(out),
               "--num_parallel_workers", "0")
    predicted = {r["path"]: r["top"][0]["score"] for r in json.loads(out.read_text())}
    assert predicted == pytest.approx(scores, abs=2e-4)  # validate's calibrated scores are predict's


def test_output_piped_into_a_closed_reader_exits_without_a_traceback(trained):
    from conftest import ROOT, SCRIPT_ENV

    data, ckpt = trained
    proc = subprocess.Popen([sys.executable, "predict.py", "--ckpt_path", str(ckpt), str(data / "val"), "--quiet",
                             "--num_parallel_workers", "0"], cwd=ROOT, env=SCRIPT_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # like `| head -0`: the reader is gone before the first line
    assert proc.wait(timeout=300) == 141 and "Traceback" not in proc.stderr.read()


def _predict_error(capsys, *argv: str) -> str:
    from tunecv.scripts import predict

    assert predict.main(list(argv)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tunecv: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_not_one_readable_image_is_an_error_not_an_empty_prediction(trained, tmp_path, capsys):
    _, ckpt = trained
    broken, notes, empty = tmp_path / "broken.png", tmp_path / "notes.txt", tmp_path / "empty.jpg"
    broken.write_bytes(b"not a png")
    notes.write_text("a note\n")
    empty.write_bytes(b"")
    out = tmp_path / "preds.csv"
    line = _predict_error(capsys, "--ckpt_path", str(ckpt), str(broken), str(notes), str(empty), "--output", str(out),
                          "--num_parallel_workers", "0")
    assert line == (f"tunecv: error: none of the 3 files could be read as an image (e.g. {broken}); give image files "
                    "(e.g. .jpg, .png)")
    assert not out.exists()
    line = _predict_error(capsys, "--ckpt_path", str(ckpt), str(notes), "--num_parallel_workers", "0")
    assert line == f"tunecv: error: {notes} could not be read as an image; give image files (e.g. .jpg, .png)"


def test_empty_folder_and_folder_without_images_are_one_line(trained, tmp_path, capsys):
    _, ckpt = trained
    (tmp_path / "empty").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no pictures here\n")
    for folder in ("empty", "docs"):
        line = _predict_error(capsys, "--ckpt_path", str(ckpt), str(tmp_path / folder))
        assert line.startswith(f"tunecv: error: no image files in {tmp_path / folder} (folders are searched for "
                               ".jpg, .png"), line


def test_check_some_read_lets_partial_failures_through(tmp_path):
    from tunecv.inference.predict import check_some_read

    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    check_some_read(paths, [str(paths[0])])  # one of two decoded: predict the rest, warn about the other
    check_some_read(paths, [])
    with pytest.raises(UserError, match="none of the 2 files"):
        check_some_read(paths, [str(p) for p in paths])


def test_validation_reads_the_training_runs_scan_cache(trained_checkpoint, caplog):
    """validate.py decodes no image the run already scanned (and writes nothing in its folder)."""
    import logging

    from tunecv.inference.predict import split_dataset
    from tunecv.inference.trained import load_trained

    _, ckpt = trained_checkpoint
    cache = ckpt.parent / "scan_cache.json"
    before = cache.read_bytes()
    trained = load_trained(str(ckpt), None, {"device": "cpu"})
    with caplog.at_level(logging.DEBUG, logger="tunecv"):
        dataset = split_dataset(trained, "val")
    assert f"({len(dataset)} from cache)" in caplog.text
    assert cache.read_bytes() == before
