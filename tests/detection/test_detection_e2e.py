"""The detection path end to end, through the real scripts on generated shapes: finetune.py writes results.txt with
finite COCO mAP and `_best`, validate.py reproduces the best mAP and writes COCO detections, predict.py draws
them; `load_from` swaps the class head; a stopped run resumes to the uninterrupted results; Mask R-CNN reports
segm mAP; bad input is one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT, SCRIPT_ENV, run_script
from tools.make_shapes import make_shapes

MODEL = "fasterrcnn_mobilenet_v3_large_fpn"
ARGS = ("--task", "detection", "--model", MODEL, "--min_size", "96", "--max_size", "96", "--batch_size", "4",
        "--opt", "sgd", "--lr", "0.02", "--warmup_iters", "4", "--scheduler", "multi_step_decay", "--milestones",
        "[1]", "--device", "cpu", "--num_parallel_workers", "0", "--seed", "3")


def _rows(results: Path) -> list[list[str]]:
    lines = results.read_text().splitlines()
    return [line.split() for line in lines[1:] if line.split()[0].isdigit()]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "a"
    make_shapes(root, ["circle", "square", "triangle"], train=16, val=6, size=96, max_shapes=2, seed=0)
    return root


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "a"
    run_script("finetune.py", "--data_dir", str(shapes), *ARGS, "--epoch_size", "2", "--ckpt_save_dir", str(out))
    return out


def test_finetune_writes_results_with_finite_map_and_the_best_checkpoint(trained):
    lines = (trained / "results.txt").read_text().splitlines()
    assert lines[0] == "epoch lr train_loss bbox_mAP bbox_mAP50 time_s"  # a box detector: no segm column
    rows = _rows(trained / "results.txt")
    assert [row[0] for row in rows] == ["1", "2"] and float(rows[1][1]) == pytest.approx(0.002)  # step at epoch 1
    assert all(0 <= float(row[3]) <= 100 and float(row[2]) > 0 for row in rows)
    assert float(rows[1][2]) < float(rows[0][2])  # the loss falls
    summary = json.loads((trained / "metrics.json").read_text())
    best = max(rows, key=lambda row: float(row[3]))
    assert lines[-1] == f"best bbox_mAP {best[3]} at epoch {summary['best_epoch']}"
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(summary["epochs"][0])
    assert (trained / f"{MODEL}_best.pth").is_file() and (trained / f"{MODEL}_last.pth").is_file()
    assert (trained / "curves.png").stat().st_size > 5000 and (trained / "metrics.csv").is_file()
    saved = (trained / "config.yaml").read_text()
    assert "task: detection" in saved and "image_resize" not in saved


def test_validate_reproduces_the_best_map_and_writes_coco_detections(trained, shapes, tmp_path):
    summary = json.loads((trained / "metrics.json").read_text())
    best = next(row for row in summary["epochs"] if row["epoch"] == summary["best_epoch"])
    output = tmp_path / "dets.json"
    proc = run_script("validate.py", "--ckpt_path", str(trained / f"{MODEL}_best.pth"), "--output", str(output))
    first = proc.stdout.splitlines()[0]
    assert first.startswith("6 images: ") and f"bbox_mAP {best['bbox_mAP']:.2f}" in first
    assert f"bbox_mAP50 {best['bbox_mAP50']:.2f}" in first
    assert [line.split()[0] for line in proc.stdout.splitlines()[2:5]] == ["circle", "square", "triangle"]
    detections = json.loads(output.read_text())
    assert detections and set(detections[0]) == {"image_id", "category_id", "bbox", "score"}
    assert {d["category_id"] for d in detections} <= {11, 21, 31}  # the file's ids, not the model's labels
    from pycocotools.coco import COCO  # the json is what COCO tools load

    COCO(str(shapes / "annotations" / "instances_val.json")).loadRes(str(output))


def test_validate_another_split_with_its_own_annotation_file(trained, shapes, tmp_path):
    shutil.copytree(shapes / "val", tmp_path / "holdout")
    reference = run_script("validate.py", "--ckpt_path", str(trained / f"{MODEL}_best.pth"), "--output",
                           str(tmp_path / "a.json"))
    other = run_script("validate.py", "--ckpt_path", str(trained / f"{MODEL}_best.pth"), "--data_dir", str(tmp_path),
                       "--split", "holdout", "--val_ann_file", str(shapes / "annotations" / "instances_val.json"),
                       "--output", str(tmp_path / "b.json"))
    assert other.stdout.splitlines()[0].split("(")[0] == reference.stdout.splitlines()[0].split("(")[0]


def test_predict_lists_and_draws_the_detections(trained, shapes, tmp_path):
    draw_dir, table = tmp_path / "drawn", tmp_path / "dets.csv"
    proc = run_script("predict.py", "--ckpt_path", str(trained / f"{MODEL}_best.pth"), str(shapes / "val"),
                      "--score_threshold", "0.05", "--draw_dir", str(draw_dir), "--output", str(table))
    drawn = sorted(draw_dir.glob("*.png"))
    assert len(drawn) == 6 and Image.open(drawn[0]).size == (96, 96)
    rows = table.read_text().splitlines()
    assert rows[0] == "path,class,score,x1,y1,x2,y2" and len(rows) > 1
    assert all(float(row.split(",")[2]) >= 0.05 for row in rows[1:])
    assert len(proc.stdout.splitlines()) == len(rows) - 1


def test_load_from_swaps_the_class_head_for_new_classes(trained, tmp_path):
    shapes_b = tmp_path / "b"
    make_shapes(shapes_b, ["star", "cross"], train=8, val=4, size=96, max_shapes=2, seed=1)
    proc = run_script("finetune.py", "--data_dir", str(shapes_b), *ARGS, "--epoch_size", "1", "--load_from",
                      str(trained / f"{MODEL}_best.pth"), "--ckpt_save_dir", str(tmp_path / "run_b"))
    assert "the class head is new, not loaded: roi_heads.box_predictor.bbox_pred.bias" in proc.stderr
    assert f"weights: checkpoint {trained / f'{MODEL}_best.pth'}" in proc.stderr
    assert json.loads((tmp_path / "run_b" / "classes.json").read_text()) == ["star", "cross"]


def test_a_stopped_run_resumes_to_the_uninterrupted_results(trained, shapes, tmp_path):
    out = tmp_path / "stopped"
    command = [sys.executable, str(ROOT / "finetune.py"), "--data_dir", str(shapes), *ARGS, "--epoch_size", "2",
               "--ckpt_save_dir", str(out)]
    proc = subprocess.Popen(command, cwd=ROOT, env=SCRIPT_ENV, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("epoch 1:"):
            proc.send_signal(signal.SIGTERM)
            break
    stderr = "".join(lines) + proc.stderr.read()
    assert proc.wait(timeout=300) == 128 + signal.SIGTERM, stderr[-2000:]
    assert "Traceback" not in stderr and "resume with: python finetune.py" in stderr
    assert len(_rows(out / "results.txt")) == 1
    resumed = run_script("finetune.py", "--data_dir", str(shapes), *ARGS, "--epoch_size", "2", "--ckpt_save_dir",
                         str(out), "--resume", "auto")
    # the signal lands after epoch 1's line, at its end or within epoch 2: resumed where it stopped, either way
    assert re.search(r"resumed at (the start of epoch 2|epoch 2 step \d+)", resumed.stderr), resumed.stderr[-2000:]
    without_time = [row[:-1] for row in _rows(out / "results.txt")]
    assert without_time == [row[:-1] for row in _rows(trained / "results.txt")]


def test_mask_rcnn_reports_segm_map_and_draws_masks(tmp_path):
    shapes = tmp_path / "shapes"
    make_shapes(shapes, ["circle", "square"], train=4, val=2, size=64, max_shapes=1, seed=2)
    out = tmp_path / "mask"
    run_script("finetune.py", "--data_dir", str(shapes), *ARGS, "--model", "maskrcnn_resnet50_fpn", "--min_size",
               "64", "--max_size", "64", "--epoch_size", "1", "--lr", "0.002", "--clip_grad", "true",
               "--trainable_backbone_layers", "1", "--ckpt_save_dir", str(out))
    header = (out / "results.txt").read_text().splitlines()[0]
    assert header == "epoch lr train_loss bbox_mAP bbox_mAP50 segm_mAP time_s"
    assert 0 <= float(_rows(out / "results.txt")[0][5]) <= 100
    proc = run_script("validate.py", "--ckpt_path", str(out / "maskrcnn_resnet50_fpn_best.pth"))
    assert "segm_mAP" in proc.stdout.splitlines()[0]
    detections = json.loads((out / "detections.json").read_text())
    assert all("segmentation" in d for d in detections)


def _error(script: str, *args: str) -> str:
    proc = run_script(script, *args, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return proc.stderr.strip().splitlines()[-1]


def test_bad_input_is_one_line(trained, shapes, tmp_path):
    not_coco = tmp_path / "not_coco"
    (not_coco / "annotations").mkdir(parents=True)
    (not_coco / "train").mkdir()
    (not_coco / "annotations" / "instances_train.json").write_text(json.dumps({"images": [], "categories": []}))
    assert "is not a COCO instances file: no 'annotations' list" in _error(
        "finetune.py", "--data_dir", str(not_coco), *ARGS)
    assert "num_classes" in _error("finetune.py", "--data_dir", str(shapes), *ARGS, "--num_classes", "5",
                                   "--ckpt_save_dir", str(tmp_path / "x"))
    assert "mixup is a key of classification" in _error("finetune.py", "--data_dir", str(shapes), *ARGS,
                                                        "--mixup", "0.2")
    ckpt = str(trained / f"{MODEL}_best.pth")
    shutil.copy(trained / f"{MODEL}_last.pth", tmp_path / f"{MODEL}_last.pth")  # a run folder of its own
    assert "other parameters would train (trainable_backbone_layers None -> 2)" in _error(
        "finetune.py", "--data_dir", str(shapes), *ARGS, "--epoch_size", "3", "--trainable_backbone_layers", "2",
        "--resume", str(tmp_path / f"{MODEL}_last.pth"))
    assert "--calibrate fits a classifier's temperature" in _error("validate.py", "--ckpt_path", ckpt, "--calibrate")
    assert "--tta" in _error("predict.py", "--ckpt_path", ckpt, str(shapes / "val"), "--tta")
    assert "is a detection checkpoint; export.py exports classifiers" in _error(
        "export.py", "--ckpt_path", ckpt, "--format", "safetensors", "--output", str(tmp_path / "x.safetensors"))
    wrong_ids = tmp_path / "val.json"
    coco = json.loads((shapes / "annotations" / "instances_val.json").read_text())
    coco["categories"] = [{**c, "id": c["id"] + 1} for c in coco["categories"]]
    coco["annotations"] = [{**a, "category_id": a["category_id"] + 1} for a in coco["annotations"]]
    wrong_ids.write_text(json.dumps(coco))
    assert "the checkpoint's categories" in _error("validate.py", "--ckpt_path", ckpt, "--val_ann_file",
                                                   str(wrong_ids))


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo")
def test_two_gloo_processes_evaluate_every_image_once(shapes, tmp_path):
    """Each process detects on its share of the val images; the mAP is over all of them (validate.py, one
    process, agrees). Batches of one image: a batch's size changes the convolutions' float sums, and an
    untrained detector's close scores would change order."""
    out = tmp_path / "ddp"
    env = {**SCRIPT_ENV, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "finetune.py", "--data_dir", str(shapes), *ARGS, "--batch_size", "1", "--epoch_size", "1",
                           "--distribute", "--ckpt_save_dir", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best bbox_mAP") == 1  # one process reports
    row = _rows(out / "results.txt")[0]
    check = run_script("validate.py", "--ckpt_path", str(out / f"{MODEL}_best.pth"), "--batch_size", "1")
    assert f"bbox_mAP {row[3]}" in check.stdout.splitlines()[0]
    assert os.path.getsize(out / f"{MODEL}_last.pth") > 1_000_000
