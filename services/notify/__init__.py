"""Notify: alerts sponsors, units and the Center; weekly progress reports (包保·定期公布)."""
