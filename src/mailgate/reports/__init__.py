"""Reporting outcomes to applications: webhooks (and delivery-report sync)."""
