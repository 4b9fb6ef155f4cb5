"""Data layouts: ImageFolder, single folder (seeded stratified split), list files, CSV, FGVC-Aircraft; detection,
errors with file:line, other tools' key names. Tiny generated images in tmp dirs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from PIL import Image

from conftest import TINY_MODEL
from tunecv.config import DataConfig, load_config
from tunecv.data import layouts
from tunecv.data.datasets import IMAGE_EXTENSIONS, create_dataset, resolve_layout
from tunecv.errors import UserError

COLORS = {"ant": (200, 30, 30), "bee": (30, 200, 30), "wasp": (30, 30, 200)}


def _img(path: Path, size: tuple[int, int] = (12, 8), color=(10, 200, 30)) -> Path:
    """A small image; the format follows the extension (.jpg → JPEG, .tif → TIFF, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def _images(root: Path, per_class: dict[str, int], folder: str = "imgs") -> dict[str, list[str]]:
    """root/<folder>/<class>/<class>_<i>.png; class → relative paths (to root), sorted."""
    out: dict[str, list[str]] = {}
    for name, count in per_class.items():
        out[name] = [f"{folder}/{name}/{name}_{i}.png" for i in range(count)]
        for rel in out[name]:
            _img(root / rel, color=COLORS.get(name, (90, 90, 90)))
    return out


def _error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message  # one clear line
    return message


def _loc(path: Path, line: int) -> str:
    return re.escape(f"{path}:{line}:")


# --------------------------------------------------------------------------- ImageFolder


def test_class_folders_nested_upper_case_hidden_and_non_images(tmp_path):
    root = tmp_path / "train"
    wanted = [_img(root / "ant" / "a.JPG"), _img(root / "ant" / "sub" / "deeper" / "b.PNG"),
              _img(root / "ant" / "c.webp"), _img(root / "bee" / "d.bmp"), _img(root / "bee" / "e.tif")]
    _img(root / "ant" / ".hidden.png")
    _img(root / "ant" / ".cache" / "f.png")
    _img(root / ".trash" / "g.png")
    _write(root / "bee" / "notes.txt", "not an image")
    _write(root / "bee" / "labels.csv", "a,b\n")
    found = layouts.class_folders(root, IMAGE_EXTENSIONS)
    assert found.classes == ["ant", "bee"]
    assert sorted(found.pairs) == sorted((str(p), p.relative_to(root).parts[0]) for p in wanted)

    dataset = create_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path)), "train", None)
    for path, label in dataset.samples:
        assert Path(path).relative_to(root).parts[0] == dataset.classes[label]
    assert dataset.crop_bottom == 0 and dataset.load_image(0).size == (12, 8)


def test_empty_class_folder_is_an_error(tmp_path):
    _img(tmp_path / "train" / "ant" / "a.png")
    (tmp_path / "train" / "bee" / "sub").mkdir(parents=True)
    _write(tmp_path / "train" / "bee" / "readme.txt", "no images here")
    with pytest.raises(UserError) as info:
        create_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path)), "train", None)
    assert re.search(r"class folder \S*bee has no images", _error(info))


# --------------------------------------------------------------------------- list files


def _list_cfg(root: Path, **keys) -> DataConfig:
    return DataConfig(dataset="list", data_dir=str(root), train_list="train_list.txt", val_list="val_list.txt",
                      **keys)


def test_list_integer_labels_without_class_list(tmp_path):
    rel = _images(tmp_path, {"ant": 2, "bee": 1, "wasp": 1})
    lines = [f"{rel['ant'][0]} 0", f"{rel['bee'][0]} 1", f"{rel['wasp'][0]} 2", f"{rel['ant'][1]} 0"]
    _write(tmp_path / "train_list.txt", "\n".join(lines) + "\n")
    dataset = create_dataset(_list_cfg(tmp_path), "train", None)
    assert dataset.classes == ["0", "1", "2"]
    assert dataset.samples == [(str(tmp_path / rel["ant"][0]), 0), (str(tmp_path / rel["bee"][0]), 1),
                               (str(tmp_path / rel["wasp"][0]), 2), (str(tmp_path / rel["ant"][1]), 0)]
    assert dataset.load_image(1).getpixel((0, 0)) == COLORS["bee"]  # the file the line names


def test_list_integer_labels_with_class_list(tmp_path):
    rel = _images(tmp_path, {"ant": 1, "bee": 1, "wasp": 1})
    # the class list's order, not sorted; names may hold spaces
    _write(tmp_path / "label_list.txt", "0 wasp\n1\thoney bee\n2   ant\n")
    _write(tmp_path / "train_list.txt", f"{rel['ant'][0]} 2\n{rel['bee'][0]} 1\n{rel['wasp'][0]} 0\n")
    dataset = create_dataset(_list_cfg(tmp_path, class_list="label_list.txt"), "train", None)
    assert dataset.classes == ["wasp", "honey bee", "ant"]
    assert dataset.targets == [2, 1, 0]


def test_digit_class_names_in_class_list_are_names(tmp_path):
    rel = _images(tmp_path, {"ant": 1, "bee": 1})
    _write(tmp_path / "classes.txt", "0 2008\n1 2007\n")  # e.g. years, or FGVC-Aircraft's variant "707-320"
    _write(tmp_path / "train_list.txt", f"{rel['ant'][0]} 2007\n{rel['bee'][0]} 2008\n")
    dataset = create_dataset(_list_cfg(tmp_path, class_list="classes.txt"), "train", None)
    assert dataset.classes == ["2008", "2007"] and dataset.targets == [1, 0]


def test_list_class_name_labels(tmp_path):
    rel = _images(tmp_path, {"wasp": 1, "ant": 2, "bee": 1})
    _write(tmp_path / "train_list.txt", f"{rel['wasp'][0]} wasp\n{rel['ant'][0]} ant\n{rel['bee'][0]} bee\n"
                                        f"{rel['ant'][1]} ant\n")
    dataset = create_dataset(_list_cfg(tmp_path), "train", None)
    assert dataset.classes == ["ant", "bee", "wasp"]  # sorted, as ImageFolder
    assert dataset.targets == [2, 0, 1, 0]
    _write(tmp_path / "classes.txt", "0 wasp\n1 bee\n2 ant\n")  # names checked against, ordered by, the list
    named = create_dataset(_list_cfg(tmp_path, class_list="classes.txt"), "train", None)
    assert named.classes == ["wasp", "bee", "ant"] and named.targets == [0, 2, 1, 2]


def test_list_paths_with_spaces_comments_blank_lines_and_bom(tmp_path):
    spaced = _img(tmp_path / "my images" / "ant 1.png", color=COLORS["ant"])
    plain = _img(tmp_path / "imgs" / "bee.png", color=COLORS["bee"])
    tabbed = _img(tmp_path / "imgs" / "wasp.png", color=COLORS["wasp"])
    text = ("# PaddleClas list\n\n"
            "my images/ant 1.png 0\n"
            "   \n"
            "  # indented comment\n"
            "imgs/bee.png    1   \n"
            "imgs/wasp.png\t2\r\n")
    _write(tmp_path / "train_list.txt", "\ufeff" + text)  # written by Notepad: a BOM, CRLF on the last line
    labelled = layouts.read_list_file(tmp_path / "train_list.txt", tmp_path, None)
    assert labelled.pairs == [(str(spaced), "0"), (str(plain), "1"), (str(tabbed), "2")]
    dataset = create_dataset(_list_cfg(tmp_path), "train", None)
    assert dataset.targets == [0, 1, 2]
    assert dataset.load_image(0).getpixel((0, 0)) == COLORS["ant"]


def test_list_image_root_and_absolute_list_path(tmp_path):
    images = tmp_path / "elsewhere"
    rel = _images(images, {"ant": 1, "bee": 1}, folder="jpg")
    lists = _write(tmp_path / "lists" / "train.txt", f"{rel['ant'][0]} ant\n{rel['bee'][0]} bee\n")
    cfg = DataConfig(dataset="list", data_dir=str(tmp_path / "lists"), train_list=str(lists),
                     image_root=str(images))
    dataset = create_dataset(cfg, "train", None)
    assert [path for path, _ in dataset.samples] == [str(images / rel["ant"][0]), str(images / rel["bee"][0])]


def test_val_list_relabelled_to_train_classes(tmp_path):
    rel = _images(tmp_path, {"ant": 1, "bee": 2, "wasp": 2})
    _write(tmp_path / "train_list.txt", f"{rel['ant'][0]} ant\n{rel['bee'][0]} bee\n{rel['wasp'][0]} wasp\n")
    _write(tmp_path / "val_list.txt", f"{rel['wasp'][1]} wasp\n{rel['bee'][1]} bee\n")  # no ant in val
    cfg = _list_cfg(tmp_path)
    train = create_dataset(cfg, "train", None)
    val = create_dataset(cfg, "val", None, classes=train.classes)
    assert val.classes == ["ant", "bee", "wasp"]
    assert val.targets == [2, 1]  # own sorted classes would give [1, 0]

    _write(tmp_path / "val_list.txt", f"{rel['wasp'][1]} hornet\n")
    with pytest.raises(UserError) as info:
        create_dataset(cfg, "val", None, classes=train.classes)
    assert "hornet" in _error(info) and "ant, bee, wasp" in str(info.value)


def test_integer_val_labels_with_fewer_classes_keep_their_index(tmp_path):
    rel = _images(tmp_path, {"ant": 2, "bee": 2, "wasp": 2})
    _write(tmp_path / "train_list.txt", f"{rel['ant'][0]} 0\n{rel['bee'][0]} 1\n{rel['wasp'][0]} 2\n")
    _write(tmp_path / "val_list.txt", f"{rel['bee'][1]} 1\n{rel['ant'][1]} 0\n")  # highest val label is 1
    train = create_dataset(_list_cfg(tmp_path), "train", None)
    val = create_dataset(_list_cfg(tmp_path), "val", None, classes=train.classes)
    assert val.classes == train.classes == ["0", "1", "2"] and val.targets == [1, 0]


@pytest.mark.parametrize("line, problem", [("imgs/ant/ant_0.png", "expected '<image path> <label>'"),
                                           ("imgs/ant/ant_0.png 3", r"label 3 is outside \[0, 3\)"),
                                           ("imgs/ant/ant_0.png -1", r"label -1 is outside \[0, 3\)"),
                                           ("imgs/ant/ant_0.png hornet", "class 'hornet' is not in class_list")])
def test_bad_list_line_names_file_and_line(tmp_path, line, problem):
    rel = _images(tmp_path, {"ant": 1, "bee": 1})
    _write(tmp_path / "classes.txt", "0 ant\n1 bee\n2 wasp\n")
    good = f"{rel['bee'][0]} {'bee' if 'hornet' in line else 1}"  # the other lines: the same kind of label
    listing = _write(tmp_path / "train_list.txt", f"# header\n{good}\n\n{line}\n")
    with pytest.raises(UserError) as info:
        create_dataset(_list_cfg(tmp_path, class_list="classes.txt"), "train", None)
    assert re.search(_loc(listing, 4) + " " + problem, _error(info))


def test_one_bad_name_label_among_integer_labels_is_blamed(tmp_path):
    rel = _images(tmp_path, {"ant": 1, "bee": 1})
    _write(tmp_path / "classes.txt", "0 ant\n1 bee\n")
    listing = _write(tmp_path / "train_list.txt", f"{rel['ant'][0]} 0\n{rel['bee'][0]} 1\n{rel['bee'][0]}x hornet\n")
    with pytest.raises(UserError) as info:
        create_dataset(_list_cfg(tmp_path, class_list="classes.txt"), "train", None)
    assert re.search(_loc(listing, 3), _error(info)) and "hornet" in str(info.value)


def test_label_outside_range_without_class_list_via_val(tmp_path):
    rel = _images(tmp_path, {"ant": 2, "bee": 2})
    _write(tmp_path / "train_list.txt", f"{rel['ant'][0]} 0\n{rel['bee'][0]} 1\n")
    _write(tmp_path / "val_list.txt", f"{rel['ant'][1]} 0\n{rel['bee'][1]} 5\n")
    train = create_dataset(_list_cfg(tmp_path), "train", None)
    with pytest.raises(UserError) as info:
        create_dataset(_list_cfg(tmp_path), "val", None, classes=train.classes)
    assert "5" in _error(info)  # class "5" is not among the training classes 0, 1


def test_duplicate_path_names_both_lines(tmp_path):
    rel = _images(tmp_path, {"ant": 1, "bee": 1})
    listing = _write(tmp_path / "train_list.txt", f"{rel['ant'][0]} 0\n{rel['bee'][0]} 1\n{rel['ant'][0]} 1\n")
    with pytest.raises(UserError) as info:
        create_dataset(_list_cfg(tmp_path), "train", None)
    message = _error(info)
    assert re.search(_loc(listing, 3), message) and "listed twice" in message and "line 1" in message


def test_bad_class_list(tmp_path):
    rel = _images(tmp_path, {"ant": 1})
    _write(tmp_path / "train_list.txt", f"{rel['ant'][0]} 0\n")
    bad = _write(tmp_path / "classes.txt", "0 ant\nbee\n")
    with pytest.raises(UserError) as info:
        create_dataset(_list_cfg(tmp_path, class_list="classes.txt"), "train", None)
    assert re.search(_loc(bad, 2) + " expected '<index> <class name>'", _error(info))
    _write(bad, "0 ant\n2 wasp\n")
    with pytest.raises(UserError, match="without gaps"):
        create_dataset(_list_cfg(tmp_path, class_list="classes.txt"), "train", None)


def test_missing_image_named(tmp_path):
    rel = _images(tmp_path, {"ant": 1, "bee": 1})
    _write(tmp_path / "train_list.txt", f"{rel['ant'][0]} 0\nimgs/bee/typo.png 1\n{rel['bee'][0]} 1\n")
    with pytest.raises(UserError) as info:
        create_dataset(_list_cfg(tmp_path, on_bad_image="error"), "train", None)
    assert str(tmp_path / "imgs/bee/typo.png") in _error(info) and "not found" in str(info.value)


def test_wrong_image_root_is_an_error(tmp_path):
    rel = _images(tmp_path, {"ant": 1, "bee": 1})
    _write(tmp_path / "train_list.txt", f"{rel['ant'][0]} 0\n{rel['bee'][0]} 1\n")
    with pytest.raises(UserError):  # every image missing: never a silently empty dataset
        create_dataset(_list_cfg(tmp_path, image_root=str(tmp_path / "nowhere")), "train", None)


def test_wrong_image_root_error_points_at_image_root(tmp_path):
    rel = _images(tmp_path, {"ant": 1, "bee": 1})
    _write(tmp_path / "train_list.txt", f"{rel['ant'][0]} 0\n{rel['bee'][0]} 1\n")
    with pytest.raises(UserError) as info:
        create_dataset(_list_cfg(tmp_path, image_root=str(tmp_path / "nowhere")), "train", None)
    assert "image_root" in _error(info) and "not found" in str(info.value)


def test_empty_list_and_missing_list_file(tmp_path):
    _write(tmp_path / "train_list.txt", "# nothing yet\n\n")
    with pytest.raises(UserError, match="lists no images"):
        create_dataset(_list_cfg(tmp_path), "train", None)
    with pytest.raises(UserError) as info:
        create_dataset(_list_cfg(tmp_path), "val", None)
    assert "val_list" in _error(info) and "not found" in str(info.value)


# --------------------------------------------------------------------------- CSV


def _csv_cfg(root: Path, **keys) -> DataConfig:
    return DataConfig(dataset="csv", data_dir=str(root), train_list="train.csv", val_list="val.csv", **keys)


def test_csv_default_columns_any_order(tmp_path):
    rel = _images(tmp_path, {"ant": 1, "bee": 1})
    _write(tmp_path / "train.csv", f"label,width,path\nbee,12,{rel['bee'][0]}\nant,12,{rel['ant'][0]}\n")
    dataset = create_dataset(_csv_cfg(tmp_path), "train", None)
    assert dataset.classes == ["ant", "bee"]
    assert dataset.samples == [(str(tmp_path / rel["bee"][0]), 1), (str(tmp_path / rel["ant"][0]), 0)]


def test_csv_custom_columns_quoted_paths_and_integer_labels(tmp_path):
    spaced = _img(tmp_path / "imgs" / "ant, the first.png", color=COLORS["ant"])
    rel = _images(tmp_path, {"bee": 1})
    _write(tmp_path / "train.csv", f'id,file,species\n1,"imgs/ant, the first.png",0\n2,{rel["bee"][0]},1\n')
    _write(tmp_path / "classes.txt", "0 ant\n1 bee\n")
    dataset = create_dataset(_csv_cfg(tmp_path, path_column="file", label_column="species",
                                      class_list="classes.txt"), "train", None)
    assert dataset.classes == ["ant", "bee"]
    assert dataset.samples == [(str(spaced), 0), (str(tmp_path / rel["bee"][0]), 1)]


def test_csv_missing_column_lists_the_columns(tmp_path):
    rel = _images(tmp_path, {"ant": 1})
    _write(tmp_path / "train.csv", f"file,species\n{rel['ant'][0]},ant\n")
    with pytest.raises(UserError) as info:
        create_dataset(_csv_cfg(tmp_path, label_column="species"), "train", None)
    message = _error(info)
    assert "no column path" in message and "file, species" in message and "path_column" in message


def test_csv_empty_label_names_file_and_line(tmp_path):
    rel = _images(tmp_path, {"ant": 2})
    listing = _write(tmp_path / "train.csv", f"path,label\n{rel['ant'][0]},ant\n{rel['ant'][1]},\n")
    with pytest.raises(UserError) as info:
        create_dataset(_csv_cfg(tmp_path), "train", None)
    assert re.search(_loc(listing, 3) + " empty path or label", _error(info))


def test_csv_with_bom(tmp_path):  # Excel's "CSV UTF-8"
    rel = _images(tmp_path, {"ant": 1})
    _write(tmp_path / "train.csv", f"\ufeffpath,label\n{rel['ant'][0]},ant\n")
    assert create_dataset(_csv_cfg(tmp_path), "train", None).classes == ["ant"]


def test_csv_line_numbers_count_blank_lines(tmp_path):
    rel = _images(tmp_path, {"ant": 1})
    listing = _write(tmp_path / "train.csv", f"path,label\n\n{rel['ant'][0]},ant\n\n{rel['ant'][0]},ant\n")
    with pytest.raises(UserError) as info:
        create_dataset(_csv_cfg(tmp_path), "train", None)
    assert re.search(_loc(listing, 5), _error(info)) and "line 3" in str(info.value)


# --------------------------------------------------------------------------- FGVC-Aircraft

AIRCRAFT = {  # id: (variant, family, manufacturer)
    "0034309": ("747-400", "Boeing 747", "Boeing"), "0056978": ("A320", "A320", "Airbus"),
    "1042824": ("Cessna 172", "Cessna 172", "Cessna"), "0062765": ("747-400", "Boeing 747", "Boeing"),
    "0157327": ("A320", "A320", "Airbus"), "0711227": ("Cessna 172", "Cessna 172", "Cessna")}
AIRCRAFT_ORDER = {"variant": ["A320", "747-400", "Cessna 172"], "family": ["Boeing 747", "A320", "Cessna 172"],
                  "manufacturer": ["Airbus", "Boeing", "Cessna"]}  # the first two: not sorted
BANNER = (0, 0, 0)


def write_aircraft(root: Path, size: tuple[int, int] = (60, 50)) -> Path:
    """root/data/images/<id>.jpg (the bottom 20 px a black banner) + the split and class files."""
    data = root / "data"
    for i, (image_id, names) in enumerate(AIRCRAFT.items()):
        color = COLORS[("ant", "bee", "wasp")[AIRCRAFT_ORDER["variant"].index(names[0])]]
        image = Image.new("RGB", size, color)
        image.paste(BANNER, (0, size[1] - 20, size[0], size[1]))
        (data / "images").mkdir(parents=True, exist_ok=True)
        image.save(data / "images" / f"{image_id}.jpg", quality=95)
        for level, column in (("variant", 0), ("family", 1), ("manufacturer", 2)):
            split = "train" if i < 3 else "val"
            with (data / f"images_{level}_{split}.txt").open("a") as handle:
                handle.write(f"{image_id} {names[column]}\n")
    for level, order in AIRCRAFT_ORDER.items():
        _write(data / layouts.AIRCRAFT_LEVEL_FILES[level], "".join(f"{name}\n" for name in order))
    return root


@pytest.mark.parametrize("level", ["variant", "family", "manufacturer"])
def test_aircraft_levels_and_class_order(tmp_path, level):
    root = write_aircraft(tmp_path / "fgvc-aircraft-2013b")
    cfg = DataConfig(dataset="aircraft", data_dir=str(root), annotation_level=level)
    train = create_dataset(cfg, "train", None)
    assert train.classes == AIRCRAFT_ORDER[level]
    column = ("variant", "family", "manufacturer").index(level)
    expected = [(str(root / "data" / "images" / f"{i}.jpg"), AIRCRAFT_ORDER[level].index(names[column]))
                for i, names in list(AIRCRAFT.items())[:3]]
    assert train.samples == expected
    val = create_dataset(cfg, "val", None, classes=train.classes)
    assert len(val) == 3 and val.classes == train.classes


def test_aircraft_banner_cropped(tmp_path):
    root = write_aircraft(tmp_path / "aircraft")
    cfg = DataConfig(dataset="aircraft", data_dir=str(root / "data"))  # data_dir may also be the data/ folder
    train = create_dataset(cfg, "train", None)
    val = create_dataset(cfg, "val", None, classes=list(reversed(train.classes)))  # relabelled: still cropped
    for dataset in (train, val):
        image = dataset.load_image(0)
        assert image.size == (60, 30)
        bottom = image.getpixel((30, 29))
        assert max(abs(a - b) for a, b in zip(bottom, BANNER)) > 100  # the banner is gone, the photo kept
    assert train.load_image(0).getpixel((30, 24)) == pytest.approx(COLORS["bee"], abs=20)  # 747-400


def test_aircraft_missing_split_file(tmp_path):
    root = write_aircraft(tmp_path)
    with pytest.raises(UserError) as info:
        create_dataset(DataConfig(dataset="aircraft", data_dir=str(root)), "trainval", None)
    assert _error(info) == (f"{root / 'data' / 'images_variant_trainval.txt'} is missing, and annotation_level "
                            "variant needs it for the trainval split; check data_dir, or set another "
                            "annotation_level (variant, family, manufacturer)")
    with pytest.raises(UserError) as info:
        create_dataset(DataConfig(dataset="aircraft", data_dir=str(root)), "holdout", None)
    assert "has the splits train, val, trainval, test, not 'holdout'" in _error(info)


# --------------------------------------------------------------------------- single folder


def test_single_folder_split_stratified_deterministic_disjoint_complete(tmp_path):
    rel = _images(tmp_path, {"ant": 8, "bee": 4, "wasp": 2, "moth": 1}, folder="all")
    cfg = DataConfig(dataset="single_folder", data_dir=str(tmp_path / "all"), val_fraction=0.25)
    train = create_dataset(cfg, "train", None)
    val = create_dataset(cfg, "val", None, classes=train.classes)
    assert train.classes == val.classes == ["ant", "bee", "moth", "wasp"]
    val_counts = {name: sum(val.classes[t] == name for t in val.targets) for name in val.classes}
    assert val_counts == {"ant": 2, "bee": 1, "moth": 0, "wasp": 1}  # 25% per class, ≥1 when a class has 2
    train_paths, val_paths = {p for p, _ in train.samples}, {p for p, _ in val.samples}
    assert not train_paths & val_paths
    assert train_paths | val_paths == {str(tmp_path / r) for paths in rel.values() for r in paths}
    for dataset in (train, val):
        for path, label in dataset.samples:
            assert Path(path).parent.name == dataset.classes[label]
    again = create_dataset(cfg, "val", None)
    assert again.samples == val.samples  # a second run (validate.py) holds out the same images

    pairs = layouts.class_folders(tmp_path / "all", IMAGE_EXTENSIONS).pairs
    other_seed = layouts.stratified_split(pairs, 0.25, seed=1)[1]
    assert set(other_seed) != {(p, val.classes[t]) for p, t in val.samples}  # the seed decides the split


def test_single_folder_unknown_split(tmp_path):
    _images(tmp_path, {"ant": 2}, folder="all")
    with pytest.raises(UserError, match="'test'"):
        create_dataset(DataConfig(dataset="single_folder", data_dir=str(tmp_path / "all")), "test", None)


# --------------------------------------------------------------------------- detection


def _make_folder(root: Path) -> None:
    for split in ("train", "val"):
        _images(root, {"ant": 2, "bee": 2}, folder=split)


def _make_single(root: Path) -> None:
    _images(root, {"ant": 3, "bee": 3}, folder=".")


def _make_paddle(root: Path) -> None:
    rel = _images(root, {"ant": 2, "bee": 2})
    _write(root / "train_list.txt", f"{rel['ant'][0]} 0\n{rel['bee'][0]} 1\n")
    _write(root / "val_list.txt", f"{rel['ant'][1]} 0\n{rel['bee'][1]} 1\n")


def _make_mmpretrain(root: Path) -> None:
    rel = _images(root, {"ant": 2, "bee": 2})
    _write(root / "meta" / "train.txt", f"{rel['ant'][0]} 0\n{rel['bee'][0]} 1\n")
    _write(root / "meta" / "val.txt", f"{rel['ant'][1]} 0\n{rel['bee'][1]} 1\n")


def _make_csv(root: Path) -> None:
    rel = _images(root, {"ant": 2, "bee": 2})
    _write(root / "train.csv", f"path,label\n{rel['ant'][0]},ant\n{rel['bee'][0]},bee\n")
    _write(root / "val.csv", f"path,label\n{rel['ant'][1]},ant\n{rel['bee'][1]},bee\n")


def _make_aircraft(root: Path) -> None:
    write_aircraft(root)


@pytest.mark.parametrize("make, kind, lists", [
    (_make_folder, "folder", None), (_make_single, "single_folder", None),
    (_make_paddle, "list", ("train_list.txt", "val_list.txt")), (_make_mmpretrain, "list", ("meta/train.txt",
                                                                                           "meta/val.txt")),
    (_make_csv, "csv", ("train.csv", "val.csv")), (_make_aircraft, "aircraft", None)])
def test_detection_picks_the_layout_and_names_it(tmp_path, caplog, make, kind, lists):
    make(tmp_path)
    caplog.set_level(logging.INFO)
    cfg = DataConfig(data_dir=str(tmp_path))
    resolved = layouts.detect_layout(cfg, IMAGE_EXTENSIONS)
    assert resolved.dataset == kind
    assert f"data layout: {kind} detected in {tmp_path}" in caplog.text
    if lists:
        assert (resolved.train_list, resolved.val_list) == tuple(str(tmp_path / name) for name in lists)
    train = create_dataset(resolved, "train", None)  # `dataset: auto` end to end
    val = create_dataset(resolved, "val", None, classes=train.classes)
    assert len(train.classes) >= 2 and len(train) >= 2 and len(val) >= 1
    assert train.crop_bottom == (layouts.AIRCRAFT_BANNER_PX if kind == "aircraft" else 0)


def test_detection_train_list_key_picks_list_or_csv(tmp_path):
    _make_folder(tmp_path)  # would be detected as folder without the key
    assert layouts.detect_layout(DataConfig(data_dir=str(tmp_path), train_list="x/train.csv"),
                                 IMAGE_EXTENSIONS).dataset == "csv"
    assert layouts.detect_layout(DataConfig(data_dir=str(tmp_path), train_list="ann.txt"),
                                 IMAGE_EXTENSIONS).dataset == "list"
    explicit = DataConfig(dataset="single_folder", data_dir=str(tmp_path))
    assert layouts.detect_layout(explicit, IMAGE_EXTENSIONS) is explicit


@pytest.mark.parametrize("extra, names", [(_make_csv, ("folder", "csv")), (_make_paddle, ("folder", "list"))])
def test_ambiguous_folder_names_candidates_and_key(tmp_path, extra, names):
    _make_folder(tmp_path)
    extra(tmp_path)
    with pytest.raises(UserError) as info:
        create_dataset(resolve_layout(DataConfig(data_dir=str(tmp_path))), "train", None)
    message = _error(info)
    assert "several layouts" in message and "dataset" in message
    for name in names:
        assert re.search(rf"\b{name}\b", message), message
    # the key picks one
    picked = create_dataset(DataConfig(dataset="folder", data_dir=str(tmp_path)), "train", None)
    assert picked.classes == ["ant", "bee"]


@pytest.mark.parametrize("make, kind", [(_make_csv, "csv"), (_make_paddle, "list")])
def test_dataset_key_resolves_the_ambiguity(tmp_path, make, kind):
    _make_folder(tmp_path)
    make(tmp_path)
    assert create_dataset(resolve_layout(DataConfig(dataset=kind, data_dir=str(tmp_path))), "train", None).classes


@pytest.mark.parametrize("content", [{}, {"notes.txt": "hello", "empty": None}])
def test_nothing_found(tmp_path, content):
    for name, text in content.items():
        _write(tmp_path / name, text) if text is not None else (tmp_path / name).mkdir()
    with pytest.raises(UserError) as info:
        create_dataset(resolve_layout(DataConfig(data_dir=str(tmp_path))), "train", None)
    message = _error(info)
    assert message.startswith(f"no data layout found in {tmp_path}")
    assert "train_list.txt" in message and "train.csv" in message
    for name in content:
        assert name in message


def test_missing_data_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        create_dataset(resolve_layout(DataConfig(data_dir=str(tmp_path / "nope"))), "train", None)


# --------------------------------------------------------------------------- other tools' keys


@pytest.mark.parametrize("list_key", ["ann_file", "cls_label_path"])
def test_renamed_keys(tmp_path, list_key):
    images = tmp_path / "images"
    rel = _images(images, {"ant": 1, "bee": 1}, folder="train")
    _write(tmp_path / "meta" / "train.txt", f"{rel['bee'][0]} 0\n{rel['ant'][0]} 1\n")
    _write(tmp_path / "meta" / "classes.txt", "0 bee\n1 ant\n")
    cfg = load_config(None, {"model": TINY_MODEL, "dataset": "CustomDataset", "data_dir": str(tmp_path),
                             list_key: "meta/train.txt", "data_prefix": str(images),
                             "class_id_map_file": "meta/classes.txt"})
    data = cfg.data
    assert (data.dataset, data.train_list, data.image_root, data.class_list) == (
        "auto", "meta/train.txt", str(images), "meta/classes.txt")
    dataset = create_dataset(resolve_layout(data), "train", None)
    assert dataset.classes == ["bee", "ant"]
    assert dataset.samples == [(str(images / rel["bee"][0]), 0), (str(images / rel["ant"][0]), 1)]
