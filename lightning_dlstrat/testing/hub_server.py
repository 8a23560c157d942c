"""A Hub-compatible HTTP server on 127.0.0.1, for testing Hub code offline with the real client.

Implements the part of the Hugging Face Hub HTTP API that ``huggingface_hub``'s ``HfApi``,
``hf_hub_download``, ``snapshot_download`` and ``PyTorchModelHubMixin.push_to_hub`` use for model
repos: repo creation, preupload + NDJSON commits (every file in "regular" mode, i.e. base64 in the
commit; no LFS or Xet), branches and tags, repo info by revision, tree listings, refs, README
metadata validation, and ``HEAD``/``GET /{repo}/resolve/{revision}/{path}`` with the headers the
client relies on (``X-Repo-Commit``, ``ETag`` = the git blob sha1 as the real Hub sends for
non-LFS files, ``Content-Length``, ``Range`` for resumed downloads, ``X-Error-Code`` on 404s).
Storage is in memory and content-addressed like git: blobs by sha1, commits by sha1 of their
tree, parent and message, so ids are stable across runs.

Checked against huggingface-hub 2.0.0 and 2.4.0 with ``HF_HUB_DISABLE_XET=1`` (the client's wire
details are private): :data:`CHECKED_HUB_VERSIONS` is the range, and the test extra pins it.

    from lightning_dlstrat.testing.hub_server import HubServer

    with HubServer() as hub:          # hub.url == "http://127.0.0.1:PORT"
        os.environ["HF_ENDPOINT"] = hub.url   # before importing huggingface_hub (or patch its constants)
        ...

Writes need a bearer token (any non-empty one, ``HF_TOKEN``); private repos are readable only with
one. ``hub.faults[path] = "flip"`` serves that file corrupted (same length, one byte changed) until
the fault is removed; ``"truncate"`` cuts the next download of it in half (then clears itself), to
test how callers handle bad downloads.

References: huggingface_hub ``hf_api.py`` (create_repo, model_info, list_repo_tree, list_repo_refs,
create_branch, create_tag), ``_commit_api.py`` (preupload, commit payload), ``file_download.py``
(HEAD metadata, ETag, X-Repo-Commit).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# the huggingface-hub releases this server has been run against with the whole test suite; the
# test extra (pyproject.toml) pins the same range, and tests/test_zoo.py checks the installed one
CHECKED_HUB_VERSIONS = ">=2.0,<2.5"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
COMMIT_ID = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(data: bytes) -> str:
    """The id git (and the Hub's ETag for non-LFS files) gives a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    files: dict[str, str]  # path -> blob sha1
    parent: str | None
    message: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    tags: dict[str, str] = field(default_factory=dict)


class HubStore:
    """Repos, commits and blobs, shared by the request threads under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.repos: dict[str, Repo] = {}
        self.commits: dict[str, Commit] = {}
        self.blobs: dict[str, bytes] = {}

    def commit(self, repo: Repo, branch: str, files: dict[str, bytes | None], message: str) -> Commit:
        """Apply ``files`` (path -> bytes, or None to delete) on top of ``branch``; move the branch."""
        parent = repo.branches.get(branch)
        tree = dict(self.commits[parent].files) if parent else {}
        for path, data in files.items():
            if data is None:
                tree = {p: o for p, o in tree.items() if p != path and not p.startswith(path.rstrip("/") + "/")}
            else:
                oid = git_blob_sha1(data)
                self.blobs[oid] = data
                tree[path] = oid
        body = json.dumps({"tree": sorted(tree.items()), "parent": parent, "message": message}).encode()
        commit = Commit(hashlib.sha1(body).hexdigest(), tree, parent, message)
        self.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    def resolve(self, repo: Repo, revision: str) -> Commit | None:
        revision = unquote(revision)
        oid = repo.branches.get(revision) or repo.tags.get(revision)
        if oid is None and COMMIT_ID.match(revision) and revision in self.commits:
            oid = revision
        return self.commits.get(oid) if oid else None


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects from the Hub
    server: "HubServer"

    def log_message(self, format, *args):  # quiet: tests read errors from responses, not stderr
        pass

    # --- plumbing ----------------------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            for method, pattern, handler in ROUTES:
                if method == self.command or (method == "GET" and self.command == "HEAD"):
                    m = re.fullmatch(pattern, url.path)
                    if m:
                        with self.server.store.lock:
                            return handler(self, **{k: unquote(v) if v else v for k, v in m.groupdict().items()})
            raise HubError(404, f"no route for {self.command} {url.path}")
        except HubError as e:
            headers = dict(e.headers)
            if e.code:
                headers["X-Error-Code"] = e.code
            headers["X-Error-Message"] = e.message
            self._json({"error": e.message}, e.status, headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    # --- auth and lookups --------------------------------------------------------------------
    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") and len(auth) > 7 else None

    def _need_token(self) -> None:
        if not self._token():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo_id: str) -> Repo:
        repo = self.server.store.repos.get(repo_id)
        if repo is None or (repo.private and not self._token()):
            raise HubError(404, f"Repository Not Found for url: {self.path}.", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = self.server.store.resolve(repo, revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # --- endpoints ---------------------------------------------------------------------------
    def whoami(self):
        self._need_token()
        self._json({"type": "user", "name": "tester", "fullname": "Test User", "orgs": [], "auth": {"type": "access_token"}})

    def create_repo(self):
        self._need_token()
        payload = json.loads(self._body() or b"{}")
        if payload.get("type", "model") != "model":
            raise HubError(400, "this test server hosts model repos only")
        name, org = payload.get("name"), payload.get("organization") or "tester"
        if not name or not re.fullmatch(r"[\w.-]+", name):
            raise HubError(400, f"invalid repo name {name!r}")
        repo_id = f"{org}/{name}"
        store = self.server.store
        if repo_id in store.repos:  # the Hub names the existing repo, create_repo(exist_ok=True) reads it
            return self._json({"error": "You already created this model repo", "url": f"{self.server.url}/{repo_id}"}, 409)
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        repo = store.repos[repo_id] = Repo(repo_id, private)
        store.commit(repo, "main", {".gitattributes": GITATTRIBUTES}, "initial commit")
        self._json({"url": f"{self.server.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def preupload(self, repo_id: str, revision: str):
        self._need_token()
        repo = self._repo(repo_id)
        commit = self.server.store.resolve(repo, revision)
        files = json.loads(self._body())["files"]
        self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": (commit.files.get(f["path"]) if commit else None)} for f in files]})

    def commit(self, repo_id: str, revision: str):
        self._need_token()
        repo = self._repo(repo_id)
        store = self.server.store
        branch = unquote(revision)
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch} (commits go to a branch; create it first)", "RevisionNotFound")
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        if header.get("parentCommit") and header["parentCommit"] != repo.branches[branch]:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files: dict[str, bytes | None] = {}
        for item in lines[1:]:
            key, value = item.get("key"), item.get("value", {})
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "file content must be base64")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                files[value["path"]] = None
            else:
                raise HubError(400, f"unsupported commit operation {key!r} (this server takes regular uploads only; set HF_HUB_DISABLE_XET=1)")
        commit = store.commit(repo, branch, files, header.get("summary") or "commit")
        self._json({"success": True, "commitOid": commit.oid, "commitUrl": f"{self.server.url}/{repo_id}/commit/{commit.oid}", "hookOutput": ""})

    def create_branch(self, repo_id: str, branch: str):
        self._need_token()
        repo = self._repo(repo_id)
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        start = json.loads(self._body() or b"{}").get("startingPoint") or "main"
        repo.branches[branch] = self._commit(repo, start).oid
        self._json({})

    def create_tag(self, repo_id: str, revision: str):
        self._need_token()
        repo = self._repo(repo_id)
        tag = json.loads(self._body())["tag"]
        if tag in repo.tags:
            raise HubError(409, f"Tag {tag} already exists")
        repo.tags[tag] = self._commit(repo, revision).oid
        self._json({})

    def refs(self, repo_id: str):
        repo = self._repo(repo_id)

        def refs(kind: str, items: dict[str, str]):
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": oid} for n, oid in sorted(items.items())]

        self._json({"branches": refs("heads", repo.branches), "tags": refs("tags", repo.tags), "converts": [], "pullRequests": []})

    def model_info(self, repo_id: str, revision: str | None = None):
        repo = self._repo(repo_id)
        commit = self._commit(repo, revision or "main")
        readme = self.server.store.blobs.get(commit.files.get("README.md", ""), b"").decode(errors="replace")
        card = _front_matter(readme) or {}
        self._json({
            "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit.oid, "private": repo.private,
            "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": card.get("tags") or [],
            "library_name": card.get("library_name"), "cardData": card,
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        })

    def tree(self, repo_id: str, revision: str, path: str | None = None):
        repo = self._repo(repo_id)
        commit = self._commit(repo, revision)
        prefix = (path.strip("/") + "/") if path else ""
        recursive = self.query.get("recursive", "false").lower() in ("1", "true")
        entries, folders = [], set()
        blobs = self.server.store.blobs
        for p, oid in sorted(commit.files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                folders.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
            entries.append({"type": "file", "path": p, "size": len(blobs[oid]), "oid": oid})
        if prefix and not entries and not folders:
            raise HubError(404, f"{path} does not exist at {revision}", "EntryNotFound")
        self._json([{"type": "directory", "path": f, "oid": git_blob_sha1(f.encode()), "size": 0} for f in sorted(folders)] + entries)

    def validate_yaml(self):
        content = json.loads(self._body()).get("content", "")
        try:
            _front_matter(content)
        except yaml.YAMLError as e:
            return self._json({"errors": [{"message": f"invalid YAML: {e}"}], "warnings": []}, 400)
        self._json({"errors": [], "warnings": []})

    def resolve(self, repo_id: str, revision: str, path: str):
        repo = self._repo(repo_id)
        commit = self._commit(repo, revision)
        headers = {"X-Repo-Commit": commit.oid}
        oid = commit.files.get(path)
        if oid is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers)
        data = self.server.store.blobs[oid]
        fault = self.server.faults.get(path)
        if fault == "flip":  # same length, one byte changed: only a hash check can tell
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        headers.update({"ETag": f'"{oid}"', "Accept-Ranges": "bytes", "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"'})
        status = 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and self.command == "GET":
            start = int(match.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            data, status = data[start:], 206
        if fault == "truncate" and self.command == "GET":
            # announce the full length, send half, then drop the connection: a transfer cut once,
            # which the client resumes with a Range request
            del self.server.faults[path]
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        self._send(status, data, headers, "application/octet-stream")


def _front_matter(text: str) -> dict | None:
    """The YAML block between the leading ``---`` lines of a model card."""
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    return (yaml.safe_load(m.group(1)) or {}) if m else None


_REPO = r"(?P<repo_id>[^/]+/[^/]+)"
ROUTES = [
    ("GET", r"/api/whoami-v2", HubHandler.whoami),
    ("POST", r"/api/repos/create", HubHandler.create_repo),
    ("POST", r"/api/validate-yaml", HubHandler.validate_yaml),
    ("POST", rf"/api/models/{_REPO}/preupload/(?P<revision>[^/]+)", HubHandler.preupload),
    ("POST", rf"/api/models/{_REPO}/commit/(?P<revision>[^/]+)", HubHandler.commit),
    ("POST", rf"/api/models/{_REPO}/branch/(?P<branch>[^/]+)", HubHandler.create_branch),
    ("POST", rf"/api/models/{_REPO}/tag/(?P<revision>[^/]+)", HubHandler.create_tag),
    ("GET", rf"/api/models/{_REPO}/refs", HubHandler.refs),
    ("GET", rf"/api/models/{_REPO}/revision/(?P<revision>[^/]+)", HubHandler.model_info),
    ("GET", rf"/api/models/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?", HubHandler.tree),
    ("GET", rf"/api/models/{_REPO}", HubHandler.model_info),
    ("GET", rf"/{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", HubHandler.resolve),
]


class HubServer(ThreadingHTTPServer):
    """The server; a context manager that serves from a daemon thread (``start``/``stop`` also work)."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, store: HubStore | None = None):
        super().__init__((host, port), HubHandler)
        self.store = store or HubStore()  # pass the same store to a new server to "restart" it
        self.faults: dict[str, str] = {}
        self.requests = 0
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def process_request(self, request, client_address):
        self.requests += 1
        self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        self._connections.discard(request)
        super().shutdown_request(request)

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections, so clients see the network go down."""
        if self._thread is None:
            return
        self.shutdown()
        self.server_close()
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join()
        self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
