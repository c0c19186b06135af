"""The schedule node's picture of the default schedule, for the README: ``python -m bench.schedule_picture``.

Drawn by the code the node uses (``framepack_core.engine.schedule_picture``) with the node's default preview
settings (inverted anti-drifting, a 5 s video at window 9, 640x608 px) except the section: the third of the
four, so that part of the history already holds generated frames. Writes bench/results/schedule_picture.png.
"""

from __future__ import annotations

import logging
from pathlib import Path

from framepack_core.engine.planning import plan_sections, section_count
from framepack_core.engine.schedule_picture import draw_schedule_picture

OUT = Path(__file__).resolve().parent / "results" / "schedule_picture.png"
MODE, SECONDS, SECTION, WIDTH, HEIGHT = "inverted_anti_drifting", 5.0, 3, 640, 608

log = logging.getLogger(__name__)


def main() -> None:
    plan = plan_sections(MODE, section_count(SECONDS))[SECTION - 1]
    draw_schedule_picture(plan, HEIGHT // 8, WIDTH // 8).save(OUT)
    log.info("wrote %s", OUT)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
