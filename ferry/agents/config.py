"""Moved to ``ferry.config``; these names stay importable from here for the video modules."""
from ferry.config import (ConfigError, InnerConfig, InnerVideoOutput, OuterConfig, OuterVideo, load_config,
                          split_host_port)

__all__ = ["ConfigError", "InnerConfig", "InnerVideoOutput", "OuterConfig", "OuterVideo", "load_config",
           "split_host_port"]
