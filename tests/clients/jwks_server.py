"""An OIDC issuer's key endpoints over HTTPS, for the workload-identity tests.

  jwks_server.py DIR CERT KEY ISSUER

Listens on 127.0.0.1 (a free port, printed as the first line of stdout) and serves
  /.well-known/openid-configuration   {"issuer": ISSUER, "jwks_uri": "https://localhost:PORT/jwks"}
  /jwks                               DIR/jwks.json, read again at every request, so rewriting
                                      that file (jwt_tokens.py keys) switches the served keys
Every request's path is appended to DIR/requests.log. Runs until killed.
"""
import http.server, json, os, ssl, sys

directory, cert, key, issuer = sys.argv[1:5]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(os.path.join(directory, "requests.log"), "a") as log:
            log.write(self.path + "\n")
        if self.path == "/.well-known/openid-configuration":
            port = self.server.server_address[1]
            body = json.dumps({"issuer": issuer, "jwks_uri": f"https://localhost:{port}/jwks"}).encode()
        elif self.path == "/jwks":
            with open(os.path.join(directory, "jwks.json"), "rb") as f:
                body = f.read()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
