"""Small helpers shared by the nas end-to-end tests."""

from __future__ import annotations

import time


def wait_until(pred, timeout: float, step: float = 0.3) -> bool:
    """Poll ``pred()`` until it is true (True) or ``timeout`` seconds pass (False)."""
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return False
