"""Real servers and an inspector for the black-list redirect tests (issue 8).

    sub (s0) ── i0 [appliance + inspector] o0 ── (u0) up: HTTP :80 and TLS :443 servers

The servers are one small Python process (dual stack, HTTP on 80 and HTTPS on 443 with a
self-signed certificate) that logs every request it receives, `Host path` a line, so a
test can say what the server never saw. /big?n=BYTES streams a download slowly.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from netlab import PYTHON, Appliance, Lab, wait_for

SERVER = r"""
import socket, ssl, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
log = open(sys.argv[1], "a", buffering=1)

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        log.write(f"{self.headers.get('Host')} {self.path}\n")
        if self.path.startswith("/big"):
            n = int(self.path.split("n=")[1])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"x" * 65536
            sent = 0
            while sent < n:
                part = chunk[:min(65536, n - sent)]
                self.wfile.write(part)
                sent += len(part)
                time.sleep(0.02)
            return
        body = b"served by the real server\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

class S(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

plain = S(("::", 80), H)
tls = S(("::", 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=tls.serve_forever, daemon=True).start()
print("ready", flush=True)
plain.serve_forever()
"""


class Servers:
    def __init__(self, lab: Lab, ns: str) -> None:
        self.lab, self.ns = lab, ns
        self.log = lab.path("server.log")
        self.log.write_text("")
        key, cert = lab.path("key.pem"), lab.path("cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "1", "-subj", "/CN=lab", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        script = lab.path("server.py")
        script.write_text(SERVER)
        self.proc = lab.popen(ns, PYTHON, str(script), str(self.log), str(cert), str(key))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "ready" in line, f"the test servers did not start: {line}"

    def requests(self) -> list[str]:
        return self.log.read_text().splitlines()


def start_inspector(app: Appliance) -> subprocess.Popen[str]:
    """`fdpi_cli inspector` in the appliance's namespace; returns once it heartbeats."""
    proc = app.cli_popen("inspector")
    wait_for(lambda: alive_ports(app), timeout=10, what="the inspector's heartbeat")
    return proc


def alive_ports(app: Appliance) -> bool:
    res = app.lab.run(app.ns, "nft", "-j", "list", "map", "netdev", "skat_plugin_redirect", "alive",
                      check=False)
    if res.returncode != 0:
        return False
    for item in json.loads(res.stdout)["nftables"]:
        if "map" in item and item["map"].get("elem"):
            return True
    return False


def curl(lab: Lab, ns: str, url: str, *extra: str, timeout: float = 10) -> dict:
    """curl from `ns`: {"rc", "code", "headers", "body", "time"} (code 0 when no answer)."""
    out = lab.run(ns, "curl", "-sS", "-m", str(timeout), "-D", "-", "-o", "/dev/stdout",
                  "-w", "\n__%{http_code} %{time_total}", *extra, url, check=False,
                  timeout=timeout + 5)
    text, _, tail = out.stdout.rpartition("\n__")
    code, seconds = [*tail.split(), "0", "0"][:2] if tail else ("0", "0")
    head, _, body = text.partition("\n\n")  # text mode: \r\n became \n
    return {"rc": out.returncode, "code": int(code), "headers": head, "body": body,
            "time": float(seconds), "stderr": out.stderr}


def resolve(host: str, port: int, addr: str) -> list[str]:
    a = f"[{addr}]" if ":" in addr else addr
    return ["--resolve", f"{host}:{port}:{a}"]


def counters(app: Appliance, **expected: int) -> dict:
    """The redirect's counters in `vrrp show --json`, once they show `expected` (the
    inspector writes its own within 0.1 s of a decision)."""
    def current() -> dict | None:
        c = app.show()["redirect"]["counters"]
        return c if all(c.get(k) == v for k, v in expected.items()) else None
    try:
        return wait_for(current, timeout=3, what=f"counters {expected}")
    except AssertionError:
        raise AssertionError(f"counters: {app.show()['redirect']}") from None


def write_list(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(path)  # atomically, as an operator's tools should


def wait_ms(seconds: float) -> None:
    time.sleep(seconds)


# -- nginx, the reference server, and a raw client (issue 17: the evasions) --------------------
NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 256; }}
http {{
    log_format seen '$host $request_uri $uri $status';
    access_log {dir}/access.log seen;
    keepalive_timeout 0;  # one request a connection: the raw client reads until close
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen 80 default_server fastopen=16;
        listen [::]:80 default_server fastopen=16;
        listen 443 ssl default_server;
        listen [::]:443 ssl default_server;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        location / {{ return 200 "served by nginx $uri\\n"; }}
    }}
}}
"""


class Nginx:
    """Debian's nginx (1.22) in `ns` on 80 and 443 (TLS, self-signed), TCP Fast Open on 80
    (the namespace's sysctl allows it); its access log says what it served."""

    def __init__(self, lab: Lab, ns: str) -> None:
        self.lab, self.ns = lab, ns
        self.dir = lab.path("nginx")
        (self.dir / "tmp").mkdir(parents=True)
        self.dir.chmod(0o755)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "1", "-subj", "/CN=lab", "-keyout", str(self.dir / "key.pem"), "-out",
                        str(self.dir / "cert.pem")], check=True, capture_output=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir))
        self.log = self.dir / "access.log"
        self.log.write_text("")
        lab.run(ns, "sysctl", "-qw", "net.ipv4.tcp_fastopen=3")
        self.proc = lab.popen(ns, "nginx", "-c", str(conf), "-p", str(self.dir))
        wait_for(lambda: lab.run(ns, "ss", "-Hltn", "sport = :80").stdout.strip(), timeout=10,
                 what="nginx to listen")

    def seen(self) -> list[str]:
        """`host request_uri uri status` of every request nginx served."""
        return self.log.read_text().splitlines()


RAW_CLIENT = r"""
import json, socket, sys, time

def one(addr, port, parts, nodelay, gap):
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if nodelay else 0)
    s.settimeout(4)
    out = {"answer": "", "error": None}
    started = time.monotonic()
    got = b""
    try:
        s.connect((addr, port))
        for i, p in enumerate(parts):
            if i:
                time.sleep(gap)
            s.sendall(bytes.fromhex(p))
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except OSError as e:
        out["error"] = type(e).__name__
    finally:
        s.close()
    out["answer"] = got.decode("latin-1")
    out["time"] = time.monotonic() - started
    return out

print(json.dumps([one(*case) for case in json.load(sys.stdin)]))
"""


def raw_requests(lab: Lab, ns: str, cases: list[tuple[str, int, list[bytes], bool, float]]
                 ) -> list[dict]:
    """Each case (addr, port, parts, nodelay, gap): connect, send `parts` (one write each,
    `gap` s apart), read until the peer closes. One process for all the cases. Returns
    {"answer": text, "error": None or the exception's name, "time": s} a case."""
    script = lab.path("raw_client.py")
    if not script.exists():
        script.write_text(RAW_CLIENT)
    data = json.dumps([(a, p, [x.hex() for x in parts], nd, g) for a, p, parts, nd, g in cases])
    out = subprocess.run(["ip", "netns", "exec", ns, PYTHON, str(script)], input=data,
                         capture_output=True, text=True, timeout=10 + 6 * len(cases))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def raw_request(lab: Lab, ns: str, addr: str, port: int, parts: list[bytes],
                nodelay: bool = True, gap: float = 0.05) -> dict:
    return raw_requests(lab, ns, [(addr, port, parts, nodelay, gap)])[0]
