"""A FastAPI service whose reports are built by background jobs (jobrunner.contrib.asgi)."""
