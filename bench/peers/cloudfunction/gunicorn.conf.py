# gunicorn as Cloud Functions gen2 runs a Python function (functions-framework's defaults): one worker
# process, the gthread worker with THREADS = 4 x CPUs (8 on this 2-vCPU machine), no worker timeout.
import os

workers = int(os.environ.get("WORKERS", 1))
worker_class = "gthread"
threads = int(os.environ.get("THREADS", (os.cpu_count() or 1) * 4))
timeout = 0
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "error")
limit_request_line = 0
