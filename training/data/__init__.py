"""Training data: sources, readers, preparation and splits, DRRs, intensity mapping,
patches, and the degradations that make their low-resolution inputs."""
