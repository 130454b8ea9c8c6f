"""The weekly email's chart draws its Chinese labels in the CJK font (not as empty boxes).

Needs a CJK font (Debian: fonts-noto-cjk); without one the chart is labelled in English by
design, and there is nothing to check.
"""

from __future__ import annotations

import warnings

import pytest

from services.notify.render import Renderer
from services.notify.report import _cjk_font, chart_png
from shared.directory import load_directory
from shared.settings import Settings

REPORT = {
    "by_status": {"reported": 3, "in_review": 2, "approved": 1, "signed_not_started": 1},
    "signings": [{"quarter": q, "target": 6, "actual": q} for q in range(1, 5)],
}


@pytest.mark.skipif(
    _cjk_font() is None, reason="no CJK font installed (apt-get install fonts-noto-cjk)"
)
def test_chinese_labels_are_drawn_with_the_cjk_font() -> None:
    renderer = Renderer(load_directory(Settings.from_env().units_file))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = chart_png(REPORT, renderer, "zh")
    assert png.startswith(b"\x89PNG")
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing[:3]
