"""The ``syncbus`` command line (DESIGN §6): one module per group of commands, one shared app."""

from __future__ import annotations

import sys

from . import (  # noqa: F401  (registers the commands)
    authoring,
    changes,
    components,
    dlq,
    reconcile,
    run,
    security,
    sources,
)
from .common import app

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
