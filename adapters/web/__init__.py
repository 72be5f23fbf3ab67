"""The operator interface over HTTP: JSON API (OpenAPI), web UI, metrics and health.

``amihub serve`` with ``[web] enabled = true`` runs it on a cheroot server of its own
(adapters/web/service.py). docs/web.md tells the whole story.
"""
