"""Blueprints: callbacks (providers), api (developers), dashboard and auth (support staff)."""
