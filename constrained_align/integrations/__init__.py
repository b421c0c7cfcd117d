"""Plug-ins for other libraries' trainers. :mod:`.trl` is the only place that imports trl."""
