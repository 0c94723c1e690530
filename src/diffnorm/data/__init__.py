"""Training data: configs, generation of exact samples at scale, and dataset tools."""

from diffnorm.data.config import ConfigError, DataConfig, load_config
from diffnorm.data.generate import DatasetError, generate

__all__ = ["ConfigError", "DataConfig", "DatasetError", "generate", "load_config"]
