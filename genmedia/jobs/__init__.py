"""Durable jobs: a request stored in a database, run by the gateway's runners, answered by any replica.

- `schema`: the tables (`jobs`, `schema_version`, and the webhook outbox's), the engine for a
  `JOB_STORE_URL`, and the versioned create/migrate every replica runs at start;
- `store`: what a job is and every change to it, each one transaction (submit, claim, progress, finish,
  cancel, retention);
- `runner`: the loop each replica runs per capability: claim a queued job under a lease, run it,
  renew the lease, at most `JOB_CONCURRENCY` at once;
- `webhooks`: target checks and the signed outbox.

The routes (`/jobs/...`) are `services.gateway.jobs`.
"""
