"""An example web application whose routes and middleware are livemod modules.

See README.md: ``uvicorn examples.webapp.app:app`` or ``python -m examples.webapp``.
"""
