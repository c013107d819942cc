import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).parent


class ChatServer:
    """Handle on the chat_server.py subprocess: script its replies, read its request count."""

    def __init__(self, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1"

    def _call(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def script(self, queue=(), default="ok", delay=3.0):
        self._call("/control", {"queue": list(queue), "default": default, "delay": delay})

    def stats(self):
        return self._call("/stats")

    @property
    def requests(self) -> int:
        return self.stats()["requests"]


@pytest.fixture(scope="module")
def chat_server():
    proc = subprocess.Popen([sys.executable, str(HERE / "chat_server.py")], stdout=subprocess.PIPE)
    try:
        port = int(proc.stdout.readline())
        yield ChatServer(port)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def server(chat_server):
    chat_server.script()
    return chat_server
