"""Offline and online training loops over accelerate (to come)."""
