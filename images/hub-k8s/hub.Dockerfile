# The hub on Kubernetes: the Zero to JupyterHub chart's own hub image (its jupyterhub_config.py
# and z2jh.py come from the chart at run time; KubeSpawner and the rest as the chart ships them),
# plus what Opsbook's hub needs beyond it: JupyterHub, oauthenticator and the idle culler at the
# versions of hub/requirements.txt (one JupyterHub version everywhere), the opsbook_hub
# package (settings, access rules, OpsbookAuthenticator, page templates), which
# helm/values.yaml's hub.extraConfig imports, and the contract it shares with the runs service
# (opsbook/contract: scopes, the settings registry; standard library only).
#
# Unlike the compose images it starts from the chart's image, not from opsbook/base (so it is
# named hub.Dockerfile, outside images/*/Dockerfile), is not built by `make build`, and its build
# needs the chart's registry (quay.io) and PyPI. Build context: the repository root:
#
#   docker build -t REGISTRY/opsbook/hub-k8s:0.1.0 -f images/hub-k8s/hub.Dockerfile .
#
# Keep the FROM tag equal to the chart version of `helm upgrade --version` (helm/README.md).
FROM quay.io/jupyterhub/k8s-hub:4.4.0

USER root
# Only these three change (--no-deps): every other package stays at the chart's tested pins;
# pip check fails the build if they no longer fit together.
RUN python3 -m pip install --no-cache-dir --no-deps \
        jupyterhub==5.5.4 \
        oauthenticator==17.4.0 \
        jupyterhub-idle-culler==2.0.0 \
 && python3 -m pip check

COPY hub/opsbook_hub /usr/local/lib/opsbook-hub/opsbook_hub
COPY opsbook/__init__.py /usr/local/lib/opsbook-hub/opsbook/
COPY opsbook/contract /usr/local/lib/opsbook-hub/opsbook/contract
RUN python3 -m compileall -q /usr/local/lib/opsbook-hub
ENV PYTHONPATH=/usr/local/lib/opsbook-hub

# The chart's user (jovyan, uid 1000), as in the image this starts from.
USER 1000
