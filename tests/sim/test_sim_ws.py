"""The simulator's WebSocket streams against the recorded capture and the documented rules."""

import json
import struct
import time

import pytest
import requests
import websocket

CONT_DOC = json.loads(
    '{"e":"continuous_kline","E":1607443058651,"ps":"BTCUSDT","ct":"PERPETUAL","k":{"t":'
    '1607443020000,"T":1607443079999,"i":"1m","f":116467658886,"L":116468012423,"o":"18787.00",'
    '"c":"18804.04","h":"18804.04","l":"18786.54","v":"197.664","n":543,"x":false,"q":'
    '"3715253.19494","V":"184.769","Q":"3472925.84746","B":"0"}}')  # binance-api.md §5.5


def recorded_events(fixtures_dir):
    lines = (fixtures_dir / "fapi_ws_combined_kline_1m_2021-07-22.txt").read_text().splitlines()
    return [json.loads(line.split(": ", 1)[1]) for line in lines[1:]]


def connect(url, timeout=5):
    return websocket.create_connection(url, timeout=timeout)


def next_json(ws, want=lambda m: True, limit_s=5.0):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if want(msg):
            return msg
    raise AssertionError("no matching message")


def close_code(ws, limit_s=5.0):
    """Read until the server's close frame; return its status code."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
    raise AssertionError("server did not close")


def same_types(ours, real):
    assert list(ours) == list(real)
    for key, value in real.items():
        assert type(ours[key]) is type(value), key


def test_combined_event_matches_capture(sim, fixtures_dir):
    real = recorded_events(fixtures_dir)
    assert len(real) == 67
    ws = connect(sim.ws_url + "/stream?streams=btcusdt@kline_1m/1000pepeusdt@kline_1m")
    try:
        msgs = [next_json(ws) for _ in range(4)]
    finally:
        ws.close()
    assert {m["stream"] for m in msgs} == {"btcusdt@kline_1m", "1000pepeusdt@kline_1m"}
    for m in msgs:
        same_types(m, real[0])
        same_types(m["data"], real[0]["data"])
        same_types(m["data"]["k"], real[0]["data"]["k"])
        k = m["data"]["k"]
        assert m["data"]["s"] == k["s"] == m["stream"].split("@")[0].upper()
        assert k["i"] == "1m" and k["T"] == k["t"] + 59_999 and k["x"] is False
        assert k["B"] == "0" and k["f"] <= k["L"]
        assert k["t"] <= m["data"]["E"] <= k["T"] + 1000


@pytest.mark.parametrize("path", ["/ws/ethusdt@kline_5m", "/market/ws/ethusdt@kline_5m"])
def test_raw_event_and_both_routes(sim, fixtures_dir, path):
    real = recorded_events(fixtures_dir)[0]["data"]
    base = sim.ws_url.rsplit("/market", 1)[0]
    ws = connect(base + path)
    try:
        ev = next_json(ws)
    finally:
        ws.close()
    same_types(ev, real)
    same_types(ev["k"], real["k"])
    assert ev["e"] == "kline" and ev["s"] == "ETHUSDT" and ev["k"]["i"] == "5m"
    assert ev["k"]["T"] - ev["k"]["t"] == 299_999


def test_continuous_kline_event_matches_docs(sim):
    ws = connect(sim.ws_url + "/ws/btcusdt_perpetual@continuousKline_1m")
    try:
        ev = next_json(ws)
    finally:
        ws.close()
    same_types(ev, CONT_DOC)
    same_types(ev["k"], CONT_DOC["k"])
    assert ev["ps"] == "BTCUSDT" and ev["ct"] == "PERPETUAL" and "s" not in ev["k"]


def test_live_event_matches_rest_open_candle(sim):
    ws = connect(sim.ws_url + "/ws/btcusdt@kline_1h")
    try:
        k = next_json(ws)["k"]
    finally:
        ws.close()
    row = requests.get(sim.rest_url + "/fapi/v1/klines",
                       params={"symbol": "BTCUSDT", "interval": "1h", "limit": 1}).json()[0]
    assert row[0] == k["t"] and row[6] == k["T"] and row[1] == k["o"]


def test_control_messages(sim):
    ws = connect(sim.ws_url + "/ws")
    try:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m",
                                                               "ethusdt@kline_1m"], "id": 1}))
        assert next_json(ws, lambda m: "id" in m) == {"result": None, "id": 1}
        ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdt@kline_1m"],
                            "id": 312}))
        assert next_json(ws, lambda m: "id" in m) == {"result": None, "id": 312}
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
        assert next_json(ws, lambda m: "id" in m) == {"result": ["btcusdt@kline_1m"], "id": 3}
        ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 2}))
        assert next_json(ws, lambda m: "id" in m) == {"result": False, "id": 2}
        ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}))
        assert next_json(ws, lambda m: "id" in m) == {"result": None, "id": 5}
        wrapped = next_json(ws, lambda m: "stream" in m)
        assert wrapped["stream"] == "btcusdt@kline_1m" and wrapped["data"]["s"] == "BTCUSDT"
        time.sleep(1.0)  # stay under 10 messages per second
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["BTCUSDT@kline_1m"], "id": 7}))
        err = next_json(ws, lambda m: m.get("id") == 7)
        assert err["error"]["code"] == 2 and "invalid stream" in err["error"]["msg"]
        ws.send("not json")
        assert next_json(ws, lambda m: "error" in m and m["id"] is None)["error"]["code"] == 3
    finally:
        ws.close()


def test_stream_limit(sim_factory):
    sim = sim_factory(max_streams_per_conn=3)
    names = [f"{s}@kline_1m" for s in ("btcusdt", "ethusdt", "1000pepeusdt", "1000shibusdt")]
    ws = connect(sim.ws_url + "/stream?streams=" + "/".join(names))
    assert close_code(ws) == 1008
    ws = connect(sim.ws_url + "/stream?streams=" + "/".join(names[:3]))
    try:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": names[3:], "id": 9}))
        err = next_json(ws, lambda m: m.get("id") == 9)
        assert "too many streams" in err["error"]["msg"]
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 10}))
        assert next_json(ws, lambda m: m.get("id") == 10)["result"] == names[:3]
    finally:
        ws.close()


def test_incoming_message_rate_limit(sim_factory):
    sim = sim_factory()
    ws = connect(sim.ws_url + "/ws")
    for i in range(12):
        try:
            ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        except websocket.WebSocketException:
            break
    codes = []
    try:
        codes.append(close_code(ws))
    except websocket.WebSocketConnectionClosedException:
        codes.append("closed")
    assert codes[0] in (1008, "closed")
    stats = sim.stats()["ws"]
    assert stats["drop_reasons"] == {"too many messages": 1}


def test_lifetime_ping_and_admin_drop(sim_factory):
    sim = sim_factory(ws_lifetime_s=1.5, ws_ping_s=0.4)
    ws = connect(sim.ws_url + "/ws/btcusdt@kline_1m")
    start = time.monotonic()
    opcodes = set()
    code = None
    while time.monotonic() - start < 5:
        opcode, data = ws.recv_data(control_frame=True)
        opcodes.add(opcode)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", data[:2])[0]
            break
    assert websocket.ABNF.OPCODE_PING in opcodes and websocket.ABNF.OPCODE_TEXT in opcodes
    assert code == 1001 and 1.4 <= time.monotonic() - start < 3.0
    sim.set_faults(ws_lifetime_s=86400)
    ws = connect(sim.ws_url + "/ws/btcusdt@kline_1m")
    next_json(ws)
    assert sim.drop_ws() == {"dropped": 1}
    assert close_code(ws) == 1001
    stats = sim.stats()["ws"]
    assert stats["opened"] == 2 and stats["dropped_by_server"] == 2
    assert stats["drop_reasons"] == {"lifetime": 1, "admin drop": 1}


def _closing_event(sim, stream):
    """Shift the server clock to 1.2 s before a minute boundary and return the x:true event."""
    wall = time.time() * 1000
    target = (wall // 60_000 + 1) * 60_000 - 1_200
    sim.set_faults(clock_offset_ms=int(target - wall))
    ws = connect(sim.ws_url + "/ws/" + stream)
    try:
        return next_json(ws, lambda m: m["k"]["x"], limit_s=4)
    finally:
        ws.close()


def test_closing_event_equals_rest_final(sim_factory):
    sim = sim_factory()
    ev = _closing_event(sim, "ethusdt@kline_1m")
    k = ev["k"]
    assert 200 <= ev["E"] - k["T"] <= 2000
    row = requests.get(sim.rest_url + "/fapi/v1/klines", params={
        "symbol": "ETHUSDT", "interval": "1m", "startTime": k["t"], "limit": 1}).json()[0]
    assert row == [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"],
                   k["V"], k["Q"], k["B"]]
    assert sim.truth("ETHUSDT", "1m", k["t"], k["t"]) == [row]


def test_closing_event_differs_when_faulted(sim_factory):
    sim = sim_factory()
    sim.set_faults(ws_close_differs=True)
    k = _closing_event(sim, "btcusdt@kline_1m")["k"]
    truth = sim.truth("BTCUSDT", "1m", k["t"], k["t"])[0]
    assert k["o"] == truth[1] and k["c"] == truth[4]
    assert k["n"] == truth[8] + 1 and k["q"] != truth[7]


def test_connection_attempts_per_ip_limited(sim_factory):
    sim = sim_factory(ws_max_conns_per_5min=2)
    for _ in range(2):
        connect(sim.ws_url + "/ws/btcusdt@kline_1m").close()
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        connect(sim.ws_url + "/ws/btcusdt@kline_1m")
    assert err.value.status_code == 429


def test_odd_symbol_streams_through_a_percent_encoded_url(sim_factory):
    from kl_actors.core.streams import combined_url, stream_names

    sim = sim_factory(symbols=4, odd_symbols=3)
    names = stream_names(["币安人生USDT", "BTC-USDT"], ["1m"])
    url = combined_url(sim.ws_url, names)
    assert url.isascii() and "%E5%B8%81" in url
    ws = connect(url)
    try:
        seen = {}
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            msg = next_json(ws, lambda m: "stream" in m)
            seen[msg["stream"]] = msg["data"]["s"]
    finally:
        ws.close()
    assert seen == {"币安人生usdt@kline_1m": "币安人生USDT", "btc-usdt@kline_1m": "BTC-USDT"}
