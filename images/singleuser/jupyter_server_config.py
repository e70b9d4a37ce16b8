"""Jupyter server settings of every engineer's container."""

c = get_config()  # noqa: F821 (given by traitlets)

# Language servers are not installed; not loading the extension saves start-up time.
c.ServerApp.jpserver_extensions = {"jupyter_lsp": False}
# Hidden files (~/.ssh, ~/.ansible) stay out of the file browser.
c.ContentsManager.allow_hidden = False
