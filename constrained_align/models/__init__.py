"""Reward and cost score models (to come)."""
