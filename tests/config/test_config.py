import dataclasses

import pytest

from pseudolabel.config.schema import Config, dump_config, load_config, with_overrides

ROOT_PIPELINE = "pipelines/eyes.yaml"


def test_default_pipeline_loads_and_round_trips(tmp_path):
    cfg = load_config(ROOT_PIPELINE)
    assert cfg.name == "eyes" and cfg.classes == ("closed", "open") and cfg.models == ("yolov8-cls", "resnet50")
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    "yaml_text,match",
    [
        ("name: x\nthreshhold: 0.2\n", "unknown key.*threshhold"),
        ("yolo:\n  epoch: 3\n", r"yolo.*unknown key.*epoch"),
        ("margin: 0.7\n", "margin"),  # the binary margin of earlier releases is still read, and checked
        ("margin: [0.4, 0.6]\n", "margin"),
        ("threshold: 0\n", r"threshold must be in \(0, 1\]"),
        ("vote_alpha: 0\n", r"vote_alpha must be in \(0, 1\], got 0"),
        ("vote_alpha: 1.5\n", r"vote_alpha must be in \(0, 1\], got 1.5"),
        ("threshold: [0.9, 0.8, 0.7]\n", "one per model"),
        ("classes: [a]\n", "classes"),
        ("classes: closed\n", "classes must be a list, got 'closed'"),
        ("classes: [a, b, A]\n", "distinct"),
        ("classes: [a, unclear]\nfolder_names: name\n", "cannot name its folder"),
        ("folder_names: labels\n", "folder_names must be 'index' or 'name'"),
        ("image_size: big\n", "image_size must be a whole number, got 'big'"),
        ("image_size: [32, 40, 3]\n", r"image_size must be one number or \[height, width\]"),
        ("channels: 2\n", "channels"),
        ("normalize: yes\n", "normalize must be a string, got True"),
        ("normalize: given\nchannels: 3\nmean: [0.5, 0.5]\nstd: [0.2, 0.2, 0.2]\n", "mean with 3 number"),
        ("label_check:\n  enabled: 'no'\n", "enabled must be true or false, got 'no'"),
        ("n_train: 8.5\n", "n_train must be a whole number, got 8.5"),
        ("yolo:\n  variant: x\n", "variant"),
        ("models: [resnet50]\n", "models"),
        ("retrain:\n  monitor: val_acc\n", "retrain monitor.*'val_acc'"),
        ("retrain:\n  unlabeled: all\n", "retrain unlabeled.*'all'"),
        ("retrain:\n  members: 0\n", "retrain members.*0"),
        ("retrain:\n  members: '2'\n", "retrain: members must be a whole number, got '2'"),
        ("retrain:\n  tta: rotate\n", "retrain tta.*'rotate'"),
        ("retrain:\n  weak_shift: nearest\n", "retrain weak_shift.*'nearest'"),
        ("resort:\n  accept: 1.4\n", r"resort: accept must be in \(0, 1\], one number or one per class \(2\)"),
        ("resort:\n  accept: [0.9, 0.9, 0.9]\n", r"one per class \(2\)"),
        ("resort:\n  keep_agreed: 1.5\n", r"resort: keep_agreed must be in \(0, 1\], got 1.5"),
        ("resort:\n  acept: 0.99\n", "resort.*unknown key.*acept"),
        ("resort:\n  settle_flagged: 'no'\n", "settle_flagged must be true or false, got 'no'"),
        ("engine: spark\n", "engine must be 'local' or 'ray', got 'spark'"),
        ("ray:\n  address: localhost:6379\n", "ray: address must be empty, 'auto' or 'ray://HOST:PORT'"),
        ("ray:\n  workers: 0\n", "ray: workers.*must be >= 1"),
        ("ray:\n  worker_cpus: 0\n", "ray: worker_cpus > 0"),
        ("ray:\n  actors: 2\n", "ray.*unknown key.*actors"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_raises_naming_the_problem(tmp_path, yaml_text, match):
    path = tmp_path / "p.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ValueError, match=match):
        load_config(path)


def test_overrides_win_and_none_is_ignored():
    cfg = with_overrides(Config(), threshold=0.9, seed=None, **{"yolo.epochs": 3})
    assert cfg.threshold == 0.9 and cfg.seed == Config().seed and cfg.yolo.epochs == 3
    assert cfg.resnet50 == Config().resnet50
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.threshold = 0.2  # type: ignore[misc]
    with pytest.raises(ValueError, match="threshold"):
        with_overrides(Config(), threshold=1.9)


@pytest.mark.parametrize(
    "yaml_text,key,expected",
    [
        ("margin: [0.48, 0.05]\n", "threshold", (0.98, 0.55)),  # run folders of earlier releases load
        ("margin: 0.3\n", "threshold", 0.8),
        ("resort:\n  closed_below: 0.05\n  open_above: 0.998\n", "accept", (0.95, 0.998)),
        ("image_size: [40, 32]\n", "hw", (40, 32)),
        ("image_size: 24\n", "hw", (24, 24)),
        ("classes: [red, green, blue]\nfolder_names: name\n", "folders", ("red", "green", "blue")),
        ("classes: [red, green, blue]\n", "folders", ("0", "1", "2")),
    ],
)
def test_keys_read_into_todays_config(tmp_path, yaml_text, key, expected):
    path = tmp_path / "p.yaml"
    path.write_text(yaml_text)
    cfg = load_config(path)
    got = cfg.resort.accept if key == "accept" else getattr(cfg, key)
    assert got == pytest.approx(expected)


def test_missing_pipeline_file(tmp_path):
    with pytest.raises(ValueError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
