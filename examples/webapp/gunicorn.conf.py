"""gunicorn settings for the example app: 4 uvicorn workers, each one a livemod worker of
service "web" (``$LIVEMOD_WEBAPP_SERVICE`` to name another).

    gunicorn -c examples/webapp/gunicorn.conf.py -w 4 -k uvicorn.workers.UvicornWorker \\
        examples.webapp.app:app
"""

import os

from examples.webapp.app import MODULES, MODULES_DIR

from livemod.integrations.gunicorn import hooks

post_fork, worker_exit = hooks(
    os.environ.get("LIVEMOD_WEBAPP_SERVICE", "web"),
    modpath=[MODULES_DIR], insmod=[MODULES_DIR / m for m in MODULES], timeout=10.0,
)
