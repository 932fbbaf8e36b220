"""RepNAS search, proxy training, reports and export; see DESIGN.md section 4."""

from __future__ import annotations

__all__: list[str] = []
