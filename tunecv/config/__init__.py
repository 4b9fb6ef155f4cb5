"""Config: MindCV-style flat keys → one validated, frozen `Config`. Imports neither torch nor timm: the values
derived from the model, the data and the run (`tunecv.resolve`) are filled in downstream."""

from tunecv.config.load import check_choice, key_type, load_config, mapping_keys, save_config, to_yaml
from tunecv.config.schema import (
    KEYS,
    SECTIONS,
    Config,
    DataConfig,
    DetectionConfig,
    FinetuneConfig,
    LoaderConfig,
    ModelConfig,
    OptimConfig,
    SchedConfig,
    TrainConfig,
)
from tunecv.errors import UserError

__all__ = ["Config", "DataConfig", "LoaderConfig", "ModelConfig", "FinetuneConfig", "OptimConfig", "SchedConfig",
           "TrainConfig", "DetectionConfig", "SECTIONS", "KEYS", "UserError", "key_type", "load_config",
           "mapping_keys", "save_config", "to_yaml", "check_choice"]
