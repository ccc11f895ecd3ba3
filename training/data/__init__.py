"""Training data: readers, adapters, preparation, splits, intensity mapping, patches."""
