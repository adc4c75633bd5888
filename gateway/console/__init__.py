"""The admin API and the operator console, served with /healthz, /readyz and /metrics on
the ops address of `lgw serve`, `lgw run` and `lgw console`.

- config: `console:` in gateway.yaml (tokens file, OIDC issuer, sessions, limits).
- auth: who is calling (hashed API tokens from a secret file or the state store, OIDC JWTs) and roles.
- security: signed session cookies, CSRF, the failed-login limit, strict headers.
- context: what one process shows (its live pipelines, or the replicas' published status).
- status: pipeline status (live, and published to the store for `lgw console`).
- app: the ASGI app (FastAPI): ops endpoints, /api/v1, /console; auth dependencies.
- api: the JSON endpoints (OpenAPI at /api/openapi.json).
- pages: the server-rendered console (Jinja2 templates, one small script, no CDN).
- client: the CLI's `--api URL --token-file` calls.
"""
