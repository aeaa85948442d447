"""Locust load tests against the running platform's public interfaces (`serena load --profile smoke|peak`)."""
