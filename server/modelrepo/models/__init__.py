"""Models and what hangs off them: catalog rows kept in step with their repositories (service),
model cards (card), deployments and the refs they pin, webhooks and their durable outbox with its
delivery worker."""
