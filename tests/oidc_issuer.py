"""A tiny OpenID Connect issuer for the tests: serves its discovery document and the JWKS
in a file the test writes (read again on each request, so a test can rotate keys), on
127.0.0.1 and the given port (0: a free one). Prints `issuer: URL` once it listens.

    python tests/oidc_issuer.py JWKS_FILE [PORT]
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    jwks_file = Path(sys.argv[1])
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": issuer, "jwks_uri": f"{issuer}/jwks", "id_token_signing_alg_values_supported":
                        ["RS256"], "subject_types_supported": ["public"], "response_types_supported": ["id_token"]}
            elif self.path == "/jwks":
                body = json.loads(jwks_file.read_text())
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            print(f"{self.address_string()} {format % args}", file=sys.stderr, flush=True)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"issuer: http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
