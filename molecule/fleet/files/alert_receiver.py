"""Test-only webhook receiver for Alertmanager (molecule fleet; never shipped by a role).

Appends the JSON body of every POST (Alertmanager's webhook payload:
https://prometheus.io/docs/alerting/latest/configuration/#webhook_config) as one line to
the file given as the second argument, and answers 200. Standard library only.

    python3 alert_receiver.py 127.0.0.1:9099 /var/lib/fleet-test-alerts/alerts.jsonl
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOCK = threading.Lock()


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    out = Path(sys.argv[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                line = json.dumps(json.loads(body), sort_keys=True)
            except ValueError:
                self.send_response(400)
                self.end_headers()
                return
            with LOCK, out.open("a") as stream:
                stream.write(line + "\n")
            self.send_response(200)
            self.end_headers()

    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
