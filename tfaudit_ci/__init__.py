"""tfaudit-ci: wrap Terraform runs in CI and keep a verifiable, WORM-locked audit trail."""

from __future__ import annotations

__version__ = "0.1.0"
