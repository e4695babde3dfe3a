"""Real-infrastructure test harness: a throwaway PKI, real Redis/Sentinel processes, real
Celery workers, all on loopback. No Docker, no mocks.

Used by tests/integration and by the later fault and benchmark suites, so every helper is
general. The fixtures in tests/conftest.py (``pki``, ``redis_fleet``) and
tests/integration/conftest.py (``start_worker``, ``celery_client``) wrap these::

    primary = redis_fleet.server("p1")                    # the roles' redis.conf + users.acl
    redis_fleet.server("r1", replica_of=primary)          # waits until the link is up
    redis_fleet.sentinels(primary)                        # 3 on TLS, own requirepass
    env = envs.sentinel(redis_fleet)                      # the CELERY_* a deployment injects
    worker = start_worker(env, pool="prefork", concurrency=2)   # waits for "ready."
    client = celery_client(env)                           # Celery app from settings.load(env)
    redis_fleet.kill(redis_fleet.primary())               # SIGKILL
    new = redis_fleet.wait_for_failover(primary)          # asks the Sentinels
    redis_fleet.restart(primary)                          # same port, rewritten config

Every redis.conf, users.acl and sentinel.conf is rendered from templates/ with the role
defaults of roles/redis and roles/redis_sentinel (only per-host inputs come from here), so
the suites run what the roles deploy: the roles' user names (``celery``, ``replication``,
``sentinel``, ``monitor``, ``admin``) and ACL rules, TLS settings and Sentinel options.

Modules: ``pki`` (cryptography: CA, server cert with IP SANs, client cert, expired, DNS-only,
unrelated CA), ``render`` (the shipped templates with the role defaults, through Ansible's
templating), ``redis_procs`` (RedisFleet, Node, Listen, Auth), ``worker`` (Worker),
``envs`` (CELERY_* environments per URL form), ``ports`` (free loopback ports).
"""
