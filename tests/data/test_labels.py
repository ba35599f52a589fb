import json
from pathlib import Path

import pytest

from pseudolabel.data.images import Problems, list_images
from pseudolabel.data.labels import clean_seed_labels, read_seed_labels, split_seeds

CLASSES = ("closed", "open")
POOL = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "sub/e.jpg"]


def parse(path: Path, pool=POOL):
    pr = Problems(quiet=True)
    labels = clean_seed_labels(read_seed_labels(path, CLASSES, pr), pool, CLASSES, pr, path.name)
    return labels, pr.lines


@pytest.mark.parametrize(
    "fmt,content,expected,n_problems",
    [
        ("json", {"open": ["a.jpg", "b.jpg"], "closed": ["c.jpg"]}, {"a.jpg": 1, "b.jpg": 1, "c.jpg": 0}, 0),
        ("json", {"open": ["a.jpg", "c.jpg"], "closed": ["c.jpg"]}, {"a.jpg": 1}, 1),  # both classes
        ("json", {"open": ["a.jpg", "zz.jpg"], "closed": []}, {"a.jpg": 1}, 1),  # not in the folder
        ("json", {"open": ["e.jpg"], "closed": ["d.jpg"]}, {"sub/e.jpg": 1, "d.jpg": 0}, 0),  # unique basename
        ("json", {"open": ["a.jpg"], "blinking": ["b.jpg"]}, {"a.jpg": 1}, 1),  # unknown class
        ("json", {"open": ["a.jpg", "a.jpg"], "closed": []}, {"a.jpg": 1}, 0),  # repeated, same label: kept
        ("csv", "image,label\na.jpg,1\nb.jpg,0\n", {"a.jpg": 1, "b.jpg": 0}, 0),
        ("csv", "image,label\na.jpg,open\nb.jpg,Closed\n", {"a.jpg": 1, "b.jpg": 0}, 0),  # class names
        ("csv", "a.jpg,1\nb.jpg,0\n", {"a.jpg": 1, "b.jpg": 0}, 0),  # no header
        ("csv", "image,label\na.jpg,1\na.jpg,0\nb.jpg,2\nc.jpg\n", {}, 3),  # conflict, bad label, short row
    ],
)
def test_label_formats(tmp_path, fmt, content, expected, n_problems):
    path = tmp_path / f"labels.{fmt}"
    path.write_text(json.dumps(content) if fmt == "json" else content)
    labels, problems = parse(path)
    assert labels == expected
    assert len(problems) == n_problems, problems
    assert all("\n" not in p and path.name in p for p in problems)


def test_class_folders(tmp_path):
    root = tmp_path / "seeds"
    for cls, names in {"open": ["a.jpg"], "0": ["b.jpg", "c.jpg"], "misc": ["d.jpg"]}.items():
        (root / cls).mkdir(parents=True)
        for n in names:
            (root / cls / n).write_bytes(b"x")
    pr = Problems(quiet=True)
    labels = clean_seed_labels(read_seed_labels(root, CLASSES, pr), POOL, CLASSES, pr, "seeds")
    assert labels == {"a.jpg": 1, "b.jpg": 0, "c.jpg": 0}
    assert len(pr.lines) == 1 and "misc" in pr.lines[0]


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("bad.json", "{not json", "malformed JSON"),
        ("list.json", "[1, 2]", "expected"),
        ("labels.txt", "a.jpg 1", r"\.json, \.csv"),
        ("missing.json", None, "not found"),
    ],
)
def test_label_file_errors_name_the_file(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        read_seed_labels(path, CLASSES, Problems(quiet=True))
    assert name in str(err.value)


def test_real_targets_json_quirks(eyes):
    names, _ = list_images(eyes / "images")
    pr = Problems(quiet=True)
    pairs = read_seed_labels(eyes / "targets.json", CLASSES, pr)
    assert len(pairs) == 100
    labels = clean_seed_labels(pairs, names, CLASSES, pr, "targets.json")
    assert "000115.jpg" not in labels  # listed under both classes
    assert "000000.jpg" not in labels  # not in images/
    assert len(labels) == 97
    assert sorted(pr.lines) == [
        "targets.json: 000000.jpg is not in the images folder; dropped",
        "targets.json: 000115.jpg is labeled both 'closed' and 'open'; dropped",
    ]
    assert sum(labels.values()) == 48 and len(labels) - sum(labels.values()) == 49


@pytest.mark.parametrize("n_train,seed", [(80, 0), (80, 1), (50, 7), (200, 0)])
def test_split_is_stratified_seeded_and_disjoint(eyes, n_train, seed):
    names, _ = list_images(eyes / "images")
    pr = Problems(quiet=True)
    labels = clean_seed_labels(read_seed_labels(eyes / "targets.json", CLASSES, pr), names, CLASSES, pr, "t")
    train, val = split_seeds(labels, n_train, seed)
    assert (train, val) == split_seeds(labels, n_train, seed)
    assert not set(train) & set(val) and set(train) | set(val) == set(labels)
    assert len(train) == min(n_train, len(labels) - 2)
    for c in (0, 1):  # each class keeps its share in train and stays in validation
        share = sum(labels[n] == c for n in train) / len(train)
        assert abs(share - sum(v == c for v in labels.values()) / len(labels)) < 0.05
        assert any(labels[n] == c for n in val)


def test_split_refuses_too_few_labels_of_a_class():
    with pytest.raises(ValueError, match="class 1"):
        split_seeds({"a": 0, "b": 0, "c": 0, "d": 1}, 2, 0)
