"""Device latency lookup tables (measured, predicted and remote devices); see DESIGN.md section 3."""

from __future__ import annotations

__all__: list[str] = []
