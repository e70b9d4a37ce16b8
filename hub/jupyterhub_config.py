"""Opsbook hub configuration: a thin translation of the settings in the environment.

Every setting is declared, documented and validated in opsbook_hub/settings.py; applied to the
config by the small functions of opsbook_hub/configure.py. No secret is written in this file.
"""

import sys

from opsbook_hub import configure, settings

try:
    hub_settings = settings.load()
except settings.SettingsError as problems:
    for line in str(problems).splitlines():
        print(f"opsbook hub: {line}", file=sys.stderr)
    raise SystemExit(1) from None

configure.apply(get_config(), hub_settings)  # noqa: F821 (get_config is given by traitlets)
