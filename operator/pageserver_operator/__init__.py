"""pageserver-operator: attach pageserver tenants from object storage onto a volume, keep them in sync."""

__version__ = "0.1.0"
