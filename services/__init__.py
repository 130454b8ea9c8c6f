"""The four investflow services: intake, review, scoring, notify."""
