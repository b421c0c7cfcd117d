"""The TRL plug-in seam: the only package that imports trl (to come)."""
