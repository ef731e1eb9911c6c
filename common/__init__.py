"""Plumbing shared by the services: Kafka clients, the database schema, metrics, HTTP health.

Nothing here holds business rules; it only connects the services to the infrastructure.
"""
