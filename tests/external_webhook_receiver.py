"""A stand-in for the external web API's webhook endpoint: it receives Replicate's webhooks over
HTTP and publishes each POST by task name, as the README's contract says, knowing nothing else.

Run as a script from outside the project (cwd=/). It imports celery and the standard library only.
Usage: external_webhook_receiver.py BROKER_URL TASK_NAME PORT_FILE
It listens on 127.0.0.1 (a free port, written to PORT_FILE once it listens) and, for each POST,
sends ``TASK_NAME(payload=<raw body as str>, headers=<the request's headers>)`` to the default
queue, then answers 200 (Replicate only needs a 2xx).
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from celery import Celery

broker, task_name, port_file = sys.argv[1:]
client = Celery("external-api", broker=broker)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        return None

    def do_POST(self):  # noqa: N802 - BaseHTTPRequestHandler's name
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        # The raw body, untouched (the signature covers its exact bytes), and the headers as received.
        client.send_task(task_name, kwargs={"payload": raw.decode("utf-8"), "headers": headers})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file, "w") as f:
    f.write(str(server.server_address[1]))
assert not any(m.split(".")[0] in ("pipeline", "workers", "db", "celeryconfig", "tests") for m in sys.modules), \
    "the external API must not import the project"
server.serve_forever()
