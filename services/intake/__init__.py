"""Intake (信息统一报送): accepts units' lead and progress events, validates, de-duplicates,
stores them, and emits the canonical `project.<kind>` events every other service consumes."""
