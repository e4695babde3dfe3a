#!/bin/bash
# Print where the local stack is and how to log in (run by `make up` and `make smoke`).
set -o errexit -o pipefail -o nounset

bundle=${CF_BUNDLE_DIR:-$(dirname "$0")/.bundle}
bind=${CF_FLOWER_BIND:-127.0.0.1}
port=${CF_FLOWER_PORT:-5555}
user=$(cut -d: -f1 "$bundle/flower-credentials" 2>/dev/null || echo '?')

flower() {
  echo "Flower:      https://$bind:$port/  (user '$user', password: cut -d: -f2 $bundle/flower-credentials;"
  echo "             the stack's CA: $bundle/pki/ca/ca.pem)"
}
if [ "${1:-}" = flower ]; then flower; exit 0; fi
cat <<TEXT

celery-fleet is up (compose project ${CF_PROJECT:-celery-fleet}).
$(flower)
Secrets:     $bundle (0600: CA, certificates, passwords, rendered configs; git-ignored,
             reused by the next 'make up'; delete it to start over after 'make down')
Redis:       not published on the host; TLS only, on the internal network ${CF_NET_PREFIX:-10.213.57}.0/24
             primary/replica .11/.12, Sentinels .21-.23 (ports 6379 / 26379)
Next:        make smoke   (send tasks, print results)     make ps / make logs
             make down    (remove containers, networks and volumes)
TEXT
