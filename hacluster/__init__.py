"""hacluster: high availability and load balancing for hospital servers."""

from importlib.metadata import PackageNotFoundError, version

# One source of truth: pyproject.toml's version, as installed (the Ansible role installs
# each release into its own virtualenv, and `hacluster status` shows every member's).
try:
    __version__ = version("hacluster")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
