"""The Opsbook hub: settings, access rules and authenticator of the JupyterHub deployment.

It imports nothing of the `opsbook` package that runs in engineers' containers, and vice versa.
"""
