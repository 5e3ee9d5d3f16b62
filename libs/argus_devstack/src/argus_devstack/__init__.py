"""Local servers (NATS, Postgres, S3) for development, tests and the local stack."""
