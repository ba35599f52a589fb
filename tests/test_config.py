import dataclasses

import pytest

from pseudolabel.config import Config, dump_config, load_config, with_overrides

ROOT_PIPELINE = "pipelines/eyes.yaml"


def test_default_pipeline_loads_and_round_trips(tmp_path):
    cfg = load_config(ROOT_PIPELINE)
    assert cfg.name == "eyes" and cfg.classes == ("closed", "open") and cfg.models == ("yolov8-cls", "resnet50")
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    "yaml_text,match",
    [
        ("name: x\nmargn: 0.2\n", "unknown key.*margn"),
        ("yolo:\n  epoch: 3\n", r"yolo.*unknown key.*epoch"),
        ("margin: 0.7\n", "margin"),
        ("margin: [0.4, 0.6]\n", "margin"),
        ("classes: [a]\n", "classes"),
        ("channels: 2\n", "channels"),
        ("yolo:\n  variant: x\n", "variant"),
        ("models: [resnet50]\n", "models"),
        ("retrain:\n  monitor: val_acc\n", "retrain monitor.*'val_acc'"),
        ("retrain:\n  unlabeled: all\n", "retrain unlabeled.*'all'"),
        ("retrain:\n  members: 0\n", "retrain members.*0"),
        ("retrain:\n  members: '2'\n", "retrain members.*'2'"),
        ("retrain:\n  tta: rotate\n", "retrain tta.*'rotate'"),
        ("retrain:\n  weak_shift: nearest\n", "retrain weak_shift.*'nearest'"),
        ("resort:\n  open_above: 0.4\n", "resort: need 0 <= closed_below < 0.5 < open_above <= 1"),
        ("resort:\n  closed_below: -0.1\n", "closed_below=-0.1"),
        ("resort:\n  keep_agreed: 1.5\n", r"resort: keep_agreed must be in \(0.5, 1\], got 1.5"),
        ("resort:\n  open_abve: 0.99\n", "resort.*unknown key.*open_abve"),
        ("resort:\n  settle_flagged: 'no'\n", "resort: settle_flagged must be true or false, got 'no'"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_raises_naming_the_problem(tmp_path, yaml_text, match):
    path = tmp_path / "p.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ValueError, match=match):
        load_config(path)


def test_overrides_win_and_none_is_ignored():
    cfg = with_overrides(Config(), margin=0.1, seed=None, **{"yolo.epochs": 3})
    assert cfg.margin == 0.1 and cfg.seed == Config().seed and cfg.yolo.epochs == 3
    assert cfg.resnet50 == Config().resnet50
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.margin = 0.2  # type: ignore[misc]
    with pytest.raises(ValueError, match="margin"):
        with_overrides(Config(), margin=0.9)


def test_missing_pipeline_file(tmp_path):
    with pytest.raises(ValueError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
