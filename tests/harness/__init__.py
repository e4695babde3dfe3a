"""Real-infrastructure test harness: a throwaway PKI, real Redis/Sentinel processes, real
Celery workers, all on loopback. Used by tests/integration and by the later fault and
benchmark suites, so every helper here is general (no test-specific knowledge)."""
