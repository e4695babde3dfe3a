"""celery-fleet: Celery on Redis in production."""

__version__ = "0.1.0"
