"""A minimal Jupyter kernel client over the server's REST and websocket API, as a browser uses it."""

import asyncio
import json
import uuid

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


class KernelError(AssertionError):
    pass


async def _execute(base, prefix, token, kernel_id, code, timeout):
    ws_url = base.replace("http", "ws", 1) + f"{prefix}api/kernels/{kernel_id}/channels"
    conn = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {token}"}))
    msg_id = uuid.uuid4().hex
    conn.write_message(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "username": "test",
                    "session": uuid.uuid4().hex,
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "channel": "shell",
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
            }
        )
    )
    out, error = [], None

    async def collect():
        nonlocal error
        while True:
            raw = await conn.read_message()
            if raw is None:
                raise KernelError("kernel websocket closed")
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                error = f"{msg['content']['ename']}: {msg['content']['evalue']}"
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return

    try:
        await asyncio.wait_for(collect(), timeout)
    finally:
        conn.close()
    if error:
        raise KernelError(f"code raised {error}; output: {''.join(out)}")
    return "".join(out)


def execute(base, prefix, token, code, timeout=60):
    headers = {"Authorization": f"token {token}"}
    r = requests.post(f"{base}{prefix}api/kernels", json={"name": "python3"}, headers=headers, timeout=60)
    assert r.status_code == 201, f"could not start a kernel: {r.status_code} {r.text[:300]}"
    kernel_id = r.json()["id"]
    try:
        return asyncio.run(_execute(base, prefix, token, kernel_id, code, timeout))
    finally:
        requests.delete(f"{base}{prefix}api/kernels/{kernel_id}", headers=headers, timeout=30)
