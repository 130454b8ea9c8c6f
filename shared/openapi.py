"""The HTTP APIs' published contract made as exact as the server, and its docs page.

- Every error is `{"errors": [{field, problem}]}`, FastAPI's own request validation errors
  too (translated into English / 中文), and the spec says so: FastAPI's default 422
  schema (`HTTPValidationError`, its `detail` list) is replaced by `ErrorList`.
- Schemas a route's code reads by hand (intake parses the raw body itself, strictly) are
  added to the components from the contract models.
- `/docs` is one self-contained page that renders `/openapi.json` with a few lines of
  script: FastAPI's Swagger UI loads its assets from a CDN, blank on a county intranet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from .contract import FieldError
from .contract.schema import contract_schemas
from .pydantic_zh import bilingual

REF = "#/components/schemas/{model}"


class ErrorList(BaseModel):
    """Every problem found, each naming its field (`$` the whole body, `$subject` the path)."""

    errors: list[FieldError]


def error_response(description: str) -> dict[str, Any]:
    return {"model": ErrorList, "description": description}


_HEADER_NAMES = {"idempotency-key": "Idempotency-Key", "authorization": "Authorization"}


def _field(loc: Sequence[Any]) -> str:
    where, *rest = loc or ("body",)
    if where == "header" and rest:
        return _HEADER_NAMES.get(str(rest[0]), str(rest[0]))
    if not rest:
        return "$"
    out = ""
    for part in rest:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


async def request_errors(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's validation errors (headers, path, query) in the project's shape and words."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldError(field=_field(err.get("loc", ())), problem=bilingual(err)).model_dump()
        for err in exc.errors()
    ]
    return JSONResponse({"errors": errors}, status_code=422)


def model_schemas(models: Sequence[type[BaseModel]]) -> dict[str, Any]:
    """The models' JSON Schemas (validation mode: what the server accepts), by name, with
    decimal patterns and date ranges (shared/contract/schema.py)."""
    return contract_schemas(models, REF)


def _fix_422(doc: dict[str, Any]) -> None:
    """FastAPI documents its own `detail` list for 422; the server answers with ErrorList."""
    ref = {"$ref": REF.format(model="ErrorList")}
    for path in doc.get("paths", {}).values():
        for op in path.values():
            response = op.get("responses", {}).get("422")
            if response is None:
                continue
            response["content"] = {"application/json": {"schema": ref}}
            if response.get("description") == "Validation Error":
                response["description"] = "errors: [{field, problem}] (English / 中文)"
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.update(model_schemas([ErrorList]))


# Answered only by the token check (services/intake/tokens.py), so absent while it is off.
AUTH_STATUSES = ("401", "403")


def _drop_auth(doc: dict[str, Any]) -> None:
    """Auth off: no operation asks for a token, so none says it does or answers 401/403."""
    for path in doc.get("paths", {}).values():
        for op in path.values():
            if op.pop("security", None) is not None:
                for status in AUTH_STATUSES:
                    op.get("responses", {}).pop(status, None)
    doc.get("components", {}).pop("securitySchemes", None)


def make_exact(
    http: FastAPI,
    extra_models: Sequence[type[BaseModel]] = (),
    auth: Callable[[], bool] | None = None,
) -> None:
    """The app's errors in the project's shape, its spec saying so, and a local /docs page.

    `auth` says whether the app's token checks are on now; the spec asks for tokens only then
    (they are a switch, INTAKE_HTTP_AUTH, and tests flip it on a live app).
    """
    http.add_exception_handler(RequestValidationError, request_errors)
    docs: dict[bool, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        on = auth() if auth is not None else True
        if on not in docs:
            doc = get_openapi(
                title=http.title,
                version=http.version,
                openapi_version=http.openapi_version,
                description=http.description,
                routes=http.routes,
            )
            _fix_422(doc)
            doc["components"]["schemas"].update(model_schemas(list(extra_models)))
            if not on:
                _drop_auth(doc)
            docs[on] = doc
        http.openapi_schema = docs[on]
        return docs[on]

    http.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
    local_docs(http)


def local_docs(http: FastAPI) -> None:
    """`/docs` without a CDN: create the app with `docs_url=None, redoc_url=None`."""

    @http.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    async def docs() -> HTMLResponse:
        return HTMLResponse(DOCS_PAGE.replace("__TITLE__", http.title))


# One page, no external assets: the spec's operations, parameters, bodies and responses.
DOCS_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>__TITLE__ · API</title>
<style>
body{font:14px/1.5 system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222}
h2{margin-top:2em;border-bottom:1px solid #ccc}
.op{border:1px solid #ddd;border-radius:4px;margin:1em 0;padding:.5em 1em}
.m{font-weight:bold;text-transform:uppercase;margin-right:.5em}
code,pre{background:#f5f5f5;padding:0 .2em}pre{padding:.5em;overflow:auto;max-height:30em}
details{margin:.3em 0}
</style></head><body>
<h1>__TITLE__</h1>
<p><a href="/openapi.json">openapi.json</a> · 接口文档（本页不依赖外网资源 / no CDN needed）</p>
<div id="spec">Loading /openapi.json … / 加载中</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const esc = s => String(s ?? '').replace(/[&<>]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]));
  const show = v => '<pre>' + esc(JSON.stringify(v, null, 2)) + '</pre>';
  const schemas = (doc.components || {}).schemas || {};
  let html = '<p>' + esc(doc.info.description) + '</p>';
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      html += '<div class="op"><span class="m">' + esc(method) + '</span><code>' + esc(path) +
        '</code> ' + esc(op.summary || '') + '<p>' + esc(op.description || '') + '</p>';
      for (const p of op.parameters || []) {
        html += '<div>' + esc(p.in) + ' <code>' + esc(p.name) + '</code>' +
          (p.required ? ' (required / 必填)' : '') + ' ' + esc(p.description || '') + '</div>';
      }
      if (op.requestBody) html += '<details><summary>body</summary>' + show(op.requestBody) + '</details>';
      for (const [code, r] of Object.entries(op.responses || {})) {
        html += '<details><summary>' + esc(code) + ' ' + esc(r.description) + '</summary>' + show(r) + '</details>';
      }
      html += '</div>';
    }
  }
  html += '<h2>Schemas / 数据结构</h2>';
  for (const [name, s] of Object.entries(schemas)) {
    html += '<details id="' + esc(name) + '"><summary>' + esc(name) + '</summary>' + show(s) + '</details>';
  }
  document.getElementById('spec').innerHTML = html;
}).catch(e => { document.getElementById('spec').textContent = 'could not load the spec: ' + e; });
</script></body></html>
"""
