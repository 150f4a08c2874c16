"""pageserver-operator: attach pageserver tenants from object storage onto a volume, keep them in sync."""

__version__ = "0.1.0"

#: Every setting's environment variable is ``ENV_PREFIX + NAME`` (`settings`, the CLI's flags).
ENV_PREFIX = "PAGESERVER_OPERATOR_"
