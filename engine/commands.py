"""The CLI commands beyond running a worker: demo, replay, customers, doctor."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Add = Callable[[str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]


def add_commands(sub: Any, add: Add) -> None:
    pass
