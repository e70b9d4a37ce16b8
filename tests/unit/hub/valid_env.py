"""A complete, valid hub environment for the tests to start from and spoil one value at a time."""

VALID_ENV = {
    "OAUTH_CLIENT_ID": "opsbook-hub",
    "OAUTH_CLIENT_SECRET": "s" * 32,
    "OAUTH_CALLBACK_URL": "http://127.0.0.1:8000/hub/oauth_callback",
    "OAUTH_AUTHORIZE_URL": "http://127.0.0.1:9000/auth",
    "OAUTH_TOKEN_URL": "http://idp:9000/token",
    "OAUTH_USERDATA_URL": "http://idp:9000/me",
    "HUB_COOKIE_SECRET": "ab" * 32,
    "JUPYTERHUB_CRYPT_KEY": "cd" * 32,
    "CONFIGPROXY_AUTH_TOKEN": "t" * 64,
    "SINGLEUSER_IMAGE": "opsbook/singleuser:0.1.0",
    "CONTAINER_PREFIX": "opsbook",
    "RUNBOOKS_HOST_PATH": "/srv/opsbook/shared-notebooks",
    "ANSIBLE_HOST_PATH": "/srv/opsbook/ansible",
    "HUB_METRICS_TOKEN": "m" * 64,
    "RUNS_SERVICE_TOKEN": "r" * 64,
}

# A host CA's public key line (ssh-keygen -t ed25519), as init-secrets.sh writes it into .env.
HOST_CA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHF8WqXKDhvB6CioAebkmXAxxMS1hwJGnoZGgqjYHYM"
