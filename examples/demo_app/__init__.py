"""The demo Celery app that `make up` runs when no app of your own is mounted."""
