"""The web side: the FastAPI app (STOW-RS endpoint, /api, console page, /metrics)."""
