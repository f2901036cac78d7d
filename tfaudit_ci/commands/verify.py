"""``tfaudit verify`` (being built: see issue 3)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from tfaudit_ci.config import Config
from tfaudit_ci.errors import ConfigError


def main_verify(ns: argparse.Namespace, config: Config, env: Mapping[str, str]) -> int:
    del ns, config, env
    raise ConfigError("tfaudit verify is not available in this build", fix="upgrade tfaudit-ci")
