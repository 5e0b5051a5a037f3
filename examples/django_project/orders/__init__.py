"""Orders: placed through the API, fulfilled and expired by Celery tasks on the pools."""
