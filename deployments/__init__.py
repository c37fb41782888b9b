"""The three jobs as Prefect deployments (see `deployments.definitions`)."""
