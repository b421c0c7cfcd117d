"""Generation, scoring, metrics and reports (to come)."""
