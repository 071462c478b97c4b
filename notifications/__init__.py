"""Alerts: the outbox written in the same transaction as the change it announces, SMS senders, dispatcher."""
