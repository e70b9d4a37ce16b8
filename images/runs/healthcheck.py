"""Docker's health check of the runs service: GET <prefix>api/health on loopback answers 200.

That endpoint needs no sign-in and checks the database too, so "healthy" means requests can be
served, not merely that the process is alive.
"""

import os
import sys
import urllib.request

prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or "/services/runs/"
port = os.environ.get("RUNS_PORT") or "8000"
url = f"http://127.0.0.1:{port}{prefix}api/health"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as error:
    print(f"runs health check: {url}: {error}", file=sys.stderr)
    sys.exit(1)
