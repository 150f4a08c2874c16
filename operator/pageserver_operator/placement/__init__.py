"""Placement of tenants on pageservers (DESIGN §8.3): pure policy, above the engine and below k8s.

`policy` decides where each tenant goes from what the control plane holds (pins, the current
attachment, which pageservers are alive and how loaded); `liveness` turns heartbeat
observations into Online/Offline by the observer's own clock. Nothing here talks to Kubernetes:
`k8s.placement` feeds it and writes its decisions.
"""
