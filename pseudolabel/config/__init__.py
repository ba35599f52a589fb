"""The pipeline configuration: frozen dataclasses loaded from ``pipelines/*.yaml`` (:mod:`.schema`), the
allowed values (:mod:`.values`) and the checks of every key (:mod:`.checks`)."""
from pseudolabel.config.schema import (
                                       CompareConfig,
                                       Config,
                                       LabelCheckConfig,
                                       RayConfig,
                                       ResortConfig,
                                       RetrainConfig,
                                       SeedTrainConfig,
                                       StagedConfig,
                                       dump_config,
                                       load_config,
                                       norm_stats,
                                       to_dict,
                                       with_overrides,
)
from pseudolabel.config.values import (
                                       BACKBONE_HELP,
                                       HEADS,
                                       MONITORS,
                                       PRETRAINED_INPUT,
                                       PRETRAINS,
                                       TRAINS,
                                       TTA_MODES,
                                       WEAK_SHIFTS,
                                       accept_per_class,
                                       image_hw,
                                       input_px,
                                       is_none,
)

__all__ = ["BACKBONE_HELP", "HEADS", "MONITORS", "PRETRAINED_INPUT", "PRETRAINS", "TRAINS", "TTA_MODES", "WEAK_SHIFTS",
           "CompareConfig", "Config", "LabelCheckConfig", "RayConfig", "ResortConfig", "RetrainConfig",
           "SeedTrainConfig", "StagedConfig", "accept_per_class", "dump_config", "image_hw", "input_px", "is_none",
           "load_config", "norm_stats", "to_dict", "with_overrides"]
