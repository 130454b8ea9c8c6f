"""Scoring: funds in place (到位资金) × multipliers, credited to the assessed units (计分)."""
