"""Config: MindCV-style flat keys → one validated, frozen `Config`. Imports neither torch nor timm."""

from tunecv.config.load import (
    KEYS,
    expand_strategy,
    key_type,
    load_config,
    mapping_keys,
    save_config,
    to_yaml,
    with_num_classes,
)
from tunecv.config.schema import (
    SECTIONS,
    Config,
    DataConfig,
    FinetuneConfig,
    LoaderConfig,
    ModelConfig,
    OptimConfig,
    SchedConfig,
    TrainConfig,
)
from tunecv.errors import UserError

__all__ = ["Config", "DataConfig", "LoaderConfig", "ModelConfig", "FinetuneConfig", "OptimConfig", "SchedConfig",
           "TrainConfig", "SECTIONS", "KEYS", "UserError", "expand_strategy", "key_type", "load_config", "mapping_keys",
           "save_config", "to_yaml", "with_num_classes"]
