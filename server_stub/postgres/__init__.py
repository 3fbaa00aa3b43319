"""server_stub on PostgreSQL: the server storage (``storage.py``) that several server processes share."""
