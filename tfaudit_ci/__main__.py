from __future__ import annotations

from tfaudit_ci.cli import main_entry

main_entry()
