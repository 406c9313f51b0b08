#!/usr/bin/env python3
"""Light load through both api nodes: CLIENTS threads, each sends sleep runs of 1-3 s for DURATION seconds.
Every answer (or connection error) is one JSON line in OUT. Some runs wait:false with a callbackUrl."""
import json, os, random, sys, threading, time, urllib.request, urllib.error
CLIENTS = int(os.environ.get("CLIENTS", "3")); DURATION = float(os.environ.get("DURATION", "60"))
OUT = os.environ.get("OUT", "/tmp/chaos/load.jsonl"); TOKEN = open(os.environ.get("TOKENF", "/tmp/chaos/token")).read().strip()
NODES = os.environ.get("NODES", "8170,8171").split(","); CB = os.environ.get("CB", "1") == "1"
lock = threading.Lock(); out = open(OUT, "a")
def log(rec):
    with lock: out.write(json.dumps(rec) + "\n"); out.flush()
def client(i):
    end = time.time() + DURATION; k = 0
    while time.time() < end:
        k += 1; port = NODES[(i + k) % len(NODES)]; s = random.choice([1, 1, 2, 3])
        body = {"language": "shell", "code": f"echo start-{i}-{k}; sleep {s}; echo end-{i}-{k}", "limits": {"timeoutMs": 20000}}
        mode = "wait"
        if CB and k % 3 == 0:
            body["wait"] = False; body["callbackUrl"] = "http://127.0.0.1:8179/hook"; mode = "cb"
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/runs", data=json.dumps(body).encode(), method="POST",
              headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
        t0 = time.time(); rec = {"t": t0, "client": i, "port": port, "mode": mode, "sleep": s}
        try:
            with urllib.request.urlopen(req, timeout=90) as r:
                b = json.loads(r.read() or b"{}"); rec.update(code=r.status, runId=b.get("runId"), status=b.get("status"), stdout=(b.get("stdout") or {}).get("content"))
        except urllib.error.HTTPError as e:
            raw = e.read(); 
            try: b = json.loads(raw)
            except Exception: b = {"raw": raw[:300].decode(errors="replace")}
            rec.update(code=e.code, type=b.get("type"), detail=b.get("detail"), runId=b.get("runId"), raw=b.get("raw"), retryAfter=e.headers.get("Retry-After"), ctype=e.headers.get("Content-Type"))
        except Exception as e:
            rec.update(code=0, error=repr(e)[:200])
        rec["dt"] = round(time.time() - t0, 3); log(rec)
        if rec["code"] in (0, 503): time.sleep(0.5)
        else: time.sleep(random.uniform(0.1, 0.5))
ts = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
[t.start() for t in ts]; [t.join() for t in ts]
