"""Framework integrations, each behind its own extra and imported only when used.

- :mod:`jobrunner.contrib.django` (``pip install 'jobrunner-pg[django]'``): a Django app.
- :mod:`jobrunner.contrib.asgi` (``pip install 'jobrunner-pg[asgi]'``): FastAPI and Starlette.

``import jobrunner`` imports neither, nor Django, Starlette or FastAPI.
"""
