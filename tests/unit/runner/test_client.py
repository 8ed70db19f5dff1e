"""The client turns the server's error bodies back into kiln's errors and retries real transport faults."""

import http.server
import json
import socket
import threading

import httpx
import pytest

from kiln.errors import ControlPlaneUnavailable, LeaseLost, NotFound, Unauthorized, WorkflowInvalid
from kiln.runner.client import ControlPlaneClient


def _client(handler, **kwargs) -> ControlPlaneClient:
    client = ControlPlaneClient("http://kiln.test", "tok", sleep=lambda _: None, **kwargs)
    client._http = httpx.Client(base_url="http://kiln.test", transport=httpx.MockTransport(handler))
    return client


def test_server_error_class_is_raised_again_by_name():
    client = _client(lambda r: httpx.Response(409, json={"error": "LeaseLost", "message": "fenced"}))
    with pytest.raises(LeaseLost, match="fenced"):
        client.heartbeat("a1", "tok")


def test_workflow_problems_survive_the_round_trip():
    body = {
        "error": "WorkflowInvalid",
        "message": "x",
        "problems": [{"file": "k.yml", "line": 2, "column": 3, "loc": ["jobs"], "message": "bad"}],
    }
    client = _client(lambda r: httpx.Response(422, json=body))
    with pytest.raises(WorkflowInvalid) as caught:
        client.get_run("r")
    assert str(caught.value.problems[0]) == "k.yml:2:3: bad"


def test_plain_status_codes_map_to_errors():
    with pytest.raises(Unauthorized):
        _client(lambda r: httpx.Response(401, text="no")).get_run("r")
    with pytest.raises(NotFound):
        _client(lambda r: httpx.Response(404, text="no")).get_run("r")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Heartbeat(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.dumps({"expires_at": "2026-01-01T00:00:00Z", "cancel_requested": False}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_connection_refused_is_retried_until_the_server_comes_up():
    # A real refused connection: nothing listens on the port until the client's first back-off.
    port = _closed_port()
    servers = []

    def sleep(_seconds):
        if not servers:
            server = http.server.HTTPServer(("127.0.0.1", port), _Heartbeat)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)

    client = ControlPlaneClient(f"http://127.0.0.1:{port}", None, sleep=sleep)
    try:
        assert client.heartbeat("a1", "tok").expires_at.year == 2026
        assert servers, "the first attempt should have been refused"
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_unreachable_server_becomes_control_plane_unavailable():
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    port = _closed_port()
    client = ControlPlaneClient(
        f"http://127.0.0.1:{port}", None, sleep=sleep, clock=lambda: now[0], retry_deadline_s=5
    )
    with pytest.raises(ControlPlaneUnavailable, match="unreachable"):
        client.get_run("r")
    assert now[0] > 2  # it backed off for most of the deadline before giving up
