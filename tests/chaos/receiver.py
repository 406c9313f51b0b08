#!/usr/bin/env python3
"""Callback receiver on 127.0.0.1:8179: logs every POST (run id, attempt, signature check) as one JSON line."""
import hashlib, hmac, json, os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
out = open(os.environ.get("CH", "/tmp/chaos") + "/callbacks.jsonl", "a")
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ts = self.headers.get("X-Sandbox-Timestamp", ""); sig = self.headers.get("X-Sandbox-Signature", "")
        ok = sig == "sha256=" + hmac.new(b"cbsecret", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        try: b = json.loads(body); st = b.get("status")
        except Exception: st = None
        out.write(json.dumps({"t": time.time(), "runId": self.headers.get("X-Sandbox-Run-Id"), "attempt": self.headers.get("X-Sandbox-Attempt"), "sigOk": ok, "status": st}) + "\n"); out.flush()
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", 8179), H).serve_forever()
