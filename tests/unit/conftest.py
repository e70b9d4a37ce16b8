"""The hub's package lives in hub/ (in the image: /etc/jupyterhub); import it from there."""

import sys
from pathlib import Path

HUB_DIR = Path(__file__).resolve().parents[2] / "hub"
sys.path.insert(0, str(HUB_DIR))
