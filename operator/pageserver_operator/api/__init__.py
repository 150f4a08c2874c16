"""The Tenant resource's API types (``pageserver.dev/v1alpha1``): one source of truth for the
CRD schema, the status the operator writes and ``status --json``."""
