"""`misp-ndr webhook`: sensors post batches over HTTP; each becomes a run of a deployment.

Prefect OSS has no webhooks (a Prefect Cloud feature), so this receiver is ours: it checks
the shared secret, validates the payload, keeps it on disk, then creates the flow run with an
idempotency key derived from the payload, so a sensor's retry never starts a second run.
"""
