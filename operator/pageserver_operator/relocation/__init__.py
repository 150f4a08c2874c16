"""Relocation of an attached tenant to another pageserver (DESIGN §8.4, Neon's RFC 028 order),
pure: the phases of ``status.placement.migration`` and what each participant does in each.
`k8s.relocation` drives it; nothing here talks to Kubernetes or storage."""
