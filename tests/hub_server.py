"""A small in-memory server speaking the part of the Hugging Face Hub HTTP API that huggingface_hub, timm and
transformers use: repo creation, branches, validate-yaml, preupload (always "regular"), ndjson commits, model info,
tree listing, and resolve (HEAD + GET) with ETag / X-Repo-Commit, 404s with X-Error-Code.

It lets the tests push and pull for real on 127.0.0.1, with failure injection (authentication, 500 on commit).
Written for ssl_hub's tests; it implements only what those clients send.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class Repo:
    """A model repository: commits (sha -> files) and branches (name -> sha)."""

    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)


@dataclass
class HubState:
    """Everything the server holds, shared with the tests (to inspect, and to inject failures)."""

    repos: dict[str, Repo] = field(default_factory=dict)
    token: str | None = None  # when set, requests must carry "Authorization: Bearer <token>"
    fail_commits: list[int] = field(default_factory=list)  # status codes the next commits answer with
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    lock: threading.Lock = field(default_factory=threading.Lock)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.branches[revision]]


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class HubHandler(BaseHTTPRequestHandler):
    """Routes requests to the state held by the server."""

    server: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read state.requests instead
        pass

    # -- plumbing ----------------------------------------------------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False):
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None, head: bool = False) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    def _authorized(self, head: bool = False) -> bool:
        if self.state.token is None or self.headers.get("Authorization") == f"Bearer {self.state.token}":
            return True
        self._error(401, "Invalid credentials in Authorization header", head=head)
        return False

    def _repo(self, repo_id: str, head: bool = False) -> Repo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound", head=head)
        return repo

    def _commit_of(self, repo: Repo, revision: str, head: bool = False) -> str | None:
        revision = unquote(revision)
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.commits:
            return revision
        self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound", head=head)
        return None

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        self.state.requests.append((method, path))
        head = method == "HEAD"
        if not self._authorized(head):
            return
        for pattern, handler in ROUTES[method]:
            match = re.fullmatch(pattern, path)
            if match:
                with self.state.lock:
                    handler(self, *match.groups(), query=parse_qs(url.query))
                return
        self._error(404, f"no route for {method} {path}", head=head)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- endpoints ---------------------------------------------------------------------------------------------
    def create_repo(self, query: dict[str, list[str]]) -> None:
        payload = json.loads(self._body() or b"{}")
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if repo_id in self.state.repos:
            message = "You already created this model repo"
            self._json(409, {"error": message, "url": f"{self.server.url}/{repo_id}"}, {"X-Error-Message": message})
            return
        first = _sha(repo_id.encode() + b"initial")
        self.state.repos[repo_id] = Repo(
            private=bool(payload.get("private")), commits={first: {}}, branches={"main": first}, history=[first]
        )
        self._json(200, {"url": f"{self.server.url}/{repo_id}", "name": repo_id})

    def validate_yaml(self, query: dict[str, list[str]]) -> None:
        self._body()
        self._json(200, {"errors": [], "warnings": []})

    def create_branch(self, repo_id: str, branch: str, query: dict[str, list[str]]) -> None:
        payload = json.loads(self._body() or b"{}")
        repo = self._repo(repo_id)
        if repo is None:
            return
        if unquote(branch) in repo.branches:
            self._error(409, "Reference already exists")
            return
        start = self._commit_of(repo, payload.get("startingPoint", "main"))
        if start is not None:
            repo.branches[unquote(branch)] = start
            self._json(200, {})

    def preupload(self, repo_id: str, revision: str, query: dict[str, list[str]]) -> None:
        payload = json.loads(self._body() or b"{}")
        if self._repo(repo_id) is None:
            return
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload["files"]]
        self._json(200, {"files": files, "commitOid": None})

    def commit(self, repo_id: str, revision: str, query: dict[str, list[str]]) -> None:
        body = self._body()
        repo = self._repo(repo_id)
        if repo is None:
            return
        if self.state.fail_commits:
            self._error(self.state.fail_commits.pop(0), "Internal Error - We're working hard to fix this")
            return
        revision = unquote(revision)
        parent = self._commit_of(repo, revision)
        if parent is None:
            return
        files = dict(repo.commits[parent])
        summary = ""
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                summary = item["value"]["summary"]
            elif item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                files.pop(item["value"]["path"], None)
            else:
                self._error(400, f"unsupported commit operation {item['key']}")
                return
        sha = _sha(
            json.dumps({k: _sha(v) for k, v in sorted(files.items())}).encode() + summary.encode() + parent.encode()
        )
        repo.commits[sha] = files
        repo.branches[revision] = sha
        repo.history.append(sha)
        self._json(200, {"commitUrl": f"{self.server.url}/{repo_id}/commit/{sha}", "commitOid": sha})

    def model_info(self, repo_id: str, revision: str | None, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        sha = self._commit_of(repo, revision or "main")
        if sha is None:
            return
        files = repo.commits[sha]
        self._json(200, {
            "id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private, "tags": [],
            "siblings": [{"rfilename": name, "size": len(data)} for name, data in sorted(files.items())],
        })  # fmt: skip

    def tree(self, repo_id: str, revision: str, subpath: str | None, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        sha = self._commit_of(repo, revision)
        if sha is None:
            return
        prefix = (subpath.strip("/") + "/") if subpath else ""
        recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
        entries: dict[str, dict[str, Any]] = {}
        for name, data in sorted(repo.commits[sha].items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :].split("/")
            if len(rest) > 1 and not recursive:
                folder = prefix + rest[0]
                entries[folder] = {"type": "directory", "path": folder, "oid": _sha(folder.encode()), "size": 0}
                continue
            if recursive:
                for depth in range(1, len(rest)):
                    folder = prefix + "/".join(rest[:depth])
                    entries[folder] = {"type": "directory", "path": folder, "oid": _sha(folder.encode()), "size": 0}
            entries[name] = {"type": "file", "path": name, "oid": _sha(data), "size": len(data)}
        self._json(200, list(entries.values()))

    def resolve(self, repo_id: str, revision: str, filename: str, query: dict[str, list[str]], head: bool) -> None:
        repo = self._repo(repo_id, head=head)
        if repo is None:
            return
        sha = self._commit_of(repo, revision, head=head)
        if sha is None:
            return
        data = repo.commits[sha].get(filename)
        if data is None:
            self._error(404, "Entry not found", "EntryNotFound", head=head)
            return
        headers = {"Content-Type": "application/octet-stream", "ETag": f'"{_sha(data)}"', "X-Repo-Commit": sha,
                   "Content-Length": str(len(data))}  # fmt: skip
        self._send(200, data, headers, head=head)

    def resolve_get(self, repo_id: str, revision: str, filename: str, query: dict[str, list[str]]) -> None:
        self.resolve(repo_id, revision, filename, query, head=False)

    def resolve_head(self, repo_id: str, revision: str, filename: str, query: dict[str, list[str]]) -> None:
        self.resolve(repo_id, revision, filename, query, head=True)


REPO = r"([^/]+/[^/]+)"
ROUTES: dict[str, list[tuple[str, Any]]] = {
    "POST": [
        (r"/api/repos/create", HubHandler.create_repo),
        (r"/api/validate-yaml", HubHandler.validate_yaml),
        (rf"/api/models/{REPO}/branch/(.+)", HubHandler.create_branch),
        (rf"/api/models/{REPO}/preupload/(.+)", HubHandler.preupload),
        (rf"/api/models/{REPO}/commit/(.+)", HubHandler.commit),
    ],
    "GET": [
        (rf"/api/models/{REPO}(?:/revision/(.+))?", HubHandler.model_info),
        (rf"/api/models/{REPO}/tree/([^/]+)(/.*)?", HubHandler.tree),
        (rf"/{REPO}/resolve/([^/]+)/(.+)", HubHandler.resolve_get),
    ],
    "HEAD": [(rf"/{REPO}/resolve/([^/]+)/(.+)", HubHandler.resolve_head)],
}


class HubServer(ThreadingHTTPServer):
    """The server, bound to a free port on 127.0.0.1; ``url`` is what ``HF_ENDPOINT`` should be."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.state = HubState()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
