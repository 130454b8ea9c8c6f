"""Scoring (考核办法·计分): funds in place × the highest multiplier, credited once per record
to the assessed subjects; quarterly signing targets; the scoreboard over HTTP."""

from .app import main

main()
