"""ops-reconciler: the GitOps control plane for self-hosted Odoo environments."""

__version__ = "0.1.0"
