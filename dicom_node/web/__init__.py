"""The web side: the FastAPI app (app), STOW-RS endpoints (stow_routes), the REST API (api,
api_docs), the console pages, probes and /metrics (status), who may ask (auth) and what
bad requests get (guard, errors)."""
