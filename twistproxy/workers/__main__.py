"""
C{python -m twistproxy.workers ...}: the program a worker process runs, as
the master starts it (L{twistproxy.workers.worker.worker_main}).
"""

import sys

from twistproxy.workers.worker import worker_main

worker_main(sys.argv[1:])
