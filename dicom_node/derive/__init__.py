"""The derived instance: identity (UIDs), header, pixels in and out, geometry and
provenance, and enhance_instance, which runs the engine on one source instance."""
