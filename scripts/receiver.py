#!/usr/bin/env python3
"""A demo webhook receiver on 127.0.0.1: verifies the Standard Webhooks signature with the
secret in SECRET_FILE (written once the endpoint exists) and prints each event. With CERT and
KEY it serves HTTPS, as real receivers do.

    receiver.py PORT SECRET_FILE [CERT KEY]"""
import base64, hashlib, hmac, json, os, ssl, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET_FILE = sys.argv[2]


def verify(headers, body):
    try:
        secret = open(SECRET_FILE).read().strip()
    except OSError:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    fresh = abs(time.time() - int(headers["webhook-timestamp"])) < 300
    return fresh and any(s == "v1," + expected for s in headers["webhook-signature"].split())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Nagle's algorithm on a keep-alive connection held each answer until the client's delayed
    # ACK, 40 ms: the demo showed that as the time of every delivery after the first.
    disable_nagle_algorithm = True

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        ok = verify(self.headers, body)
        event = json.loads(body)
        print(f"[receiver] {self.headers['webhook-event-type']:<13} {event['id']}  "
              f"signature {'OK' if ok else 'INVALID'}  attempt {self.headers['webhook-attempt']}", flush=True)
        print("           data: " + json.dumps(event["data"], sort_keys=True), flush=True)
        self.send_response(200 if ok else 401)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
if len(sys.argv) > 4:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
