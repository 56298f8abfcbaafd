"""The admin console for product teams: its site, login, lists, pages and every ModelAdmin.

The console may import every domain package (devices, delivery, realtime, identities); no
domain package imports it (tests/test_import_boundaries.py). See docs/admin.md.
"""
