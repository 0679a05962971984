"""The Engine.IO / Socket.IO codec and the mapping of server events to domain events."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from v6node.adapters.socketio import codec
from v6node.adapters.socketio.codec import CodecError, EioPacket, EioType, SioPacket, SioType
from v6node.domain.errors import EventStreamError
from v6node.domain.events import (
    KillRequested,
    NewTask,
    PeerStatusChanged,
    ServerMessage,
    SyncRequested,
    TokenExpired,
    TokenInvalid,
)
from v6node.domain.kill import KillOrder, KillTarget

# What the vantage6 4.15.2 server really sent in the rig (tests/rig/server.py starts it).
SERVER_OPEN = '0{"sid":"ns9GGdHEO_BegV7hAAAA","upgrades":[],"pingTimeout":60000,"pingInterval":25000,"maxPayload":1000000}'


# --- Engine.IO -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("1", EioPacket(EioType.CLOSE)),
        ("2", EioPacket(EioType.PING)),
        ("3", EioPacket(EioType.PONG)),
        ("2probe", EioPacket(EioType.PING, "probe")),
        ('42/tasks,["sync"]', EioPacket(EioType.MESSAGE, '2/tasks,["sync"]')),
        ("6", EioPacket(EioType.NOOP)),
    ],
)
def test_engineio_packets_decode_and_encode_back(frame: str, expected: EioPacket) -> None:
    assert codec.decode_eio(frame) == expected
    assert codec.encode_eio(expected) == frame


def test_the_servers_open_packet_gives_sid_and_heartbeat_in_seconds() -> None:
    packet = codec.decode_eio(SERVER_OPEN)
    assert packet.type is EioType.OPEN

    info = codec.parse_open(packet.data)

    assert info.sid == "ns9GGdHEO_BegV7hAAAA"
    assert info.ping_interval == 25.0
    assert info.ping_timeout == 60.0
    assert info.max_payload == 1_000_000
    assert info.dead_after == 85.0


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        '{"pingInterval": 25000, "pingTimeout": 60000}',
        '{"sid": "x", "pingTimeout": 60000}',
        '{"sid": "x", "pingInterval": "25000", "pingTimeout": 60000}',
        '{"sid": "x", "pingInterval": true, "pingTimeout": 60000}',
        '{"sid": "x", "pingInterval": -1, "pingTimeout": 60000}',
    ],
)
def test_an_unusable_open_packet_is_a_codec_error(body: str) -> None:
    with pytest.raises(CodecError, match="open packet"):
        codec.parse_open(body)


@pytest.mark.parametrize("frame", ["", "9", "x42", "-1"])
def test_unknown_engineio_packets_are_codec_errors(frame: str) -> None:
    with pytest.raises(CodecError, match="Engine.IO"):
        codec.decode_eio(frame)


def test_binary_frames_are_refused_with_a_clear_error() -> None:
    with pytest.raises(CodecError, match="binary"):
        codec.decode_eio(b"\x04\x00\x01")


def test_codec_errors_belong_to_the_event_stream_family_and_are_not_retryable() -> None:
    assert issubclass(CodecError, EventStreamError)
    assert CodecError.retryable is False


@pytest.mark.parametrize(
    ("root", "url"),
    [
        ("http://127.0.0.1:7601", "ws://127.0.0.1:7601/socket.io/?EIO=4&transport=websocket"),
        ("http://127.0.0.1:7601/", "ws://127.0.0.1:7601/socket.io/?EIO=4&transport=websocket"),
        ("https://v6.example.org", "wss://v6.example.org/socket.io/?EIO=4&transport=websocket"),
        ("https://example.org/v6", "wss://example.org/v6/socket.io/?EIO=4&transport=websocket"),
        ("ws://host:80", "ws://host:80/socket.io/?EIO=4&transport=websocket"),
    ],
)
def test_the_handshake_url_is_at_the_server_root_with_eio4_websocket(root: str, url: str) -> None:
    assert codec.handshake_url(root) == url


def test_the_handshake_url_takes_a_custom_socketio_path() -> None:
    assert codec.handshake_url("http://h:1", "sio") == "ws://h:1/sio/?EIO=4&transport=websocket"


@pytest.mark.parametrize("root", ["127.0.0.1:7601", "ftp://host", "http://"])
def test_a_server_root_that_is_not_an_http_url_is_refused(root: str) -> None:
    with pytest.raises(ValueError, match="server root"):
        codec.handshake_url(root)


# --- Socket.IO -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "packet"),
    [
        ("0/tasks,", SioPacket(SioType.CONNECT, "/tasks")),
        ('0/tasks,{"sid":"l7RkNJoAdK1Uo5bUAAAB"}', SioPacket(SioType.CONNECT, "/tasks", {"sid": "l7RkNJoAdK1Uo5bUAAAB"})),
        ("1/tasks,", SioPacket(SioType.DISCONNECT, "/tasks")),
        ('2/tasks,["sync"]', SioPacket(SioType.EVENT, "/tasks", ["sync"])),
        ('2/tasks,["new_task",{"id":5,"parent_id":null}]', SioPacket(SioType.EVENT, "/tasks", ["new_task", {"id": 5, "parent_id": None}])),
        ('2/tasks,12["ping"]', SioPacket(SioType.EVENT, "/tasks", ["ping"], ack_id=12)),
        ("3/tasks,1[]", SioPacket(SioType.ACK, "/tasks", [], ack_id=1)),
        ('4/tasks,{"message":"Not authorized"}', SioPacket(SioType.CONNECT_ERROR, "/tasks", {"message": "Not authorized"})),
        ("0", SioPacket(SioType.CONNECT)),
        ('2["hello",1]', SioPacket(SioType.EVENT, "/", ["hello", 1])),
        ('27["hello"]', SioPacket(SioType.EVENT, "/", ["hello"], ack_id=7)),
    ],
)
def test_socketio_packets_decode_and_encode_back(text: str, packet: SioPacket) -> None:
    assert codec.decode_sio(text) == packet
    assert codec.encode_sio(packet) == text


def test_a_namespace_without_trailing_comma_is_read_whole() -> None:
    assert codec.decode_sio("1/tasks") == SioPacket(SioType.DISCONNECT, "/tasks")


def test_event_gives_name_and_arguments() -> None:
    packet = codec.decode_sio('2/tasks,["message","hi","there"]')
    assert packet.event == ("message", ["hi", "there"])


def test_event_property_refuses_other_packet_types() -> None:
    with pytest.raises(CodecError, match="not an event"):
        _ = SioPacket(SioType.ACK, "/tasks", [], 1).event


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "packet type"),
        ("9/tasks,", "packet type"),
        ("x", "packet type"),
        ("2/tasks,[sync]", "not JSON"),
        ('2/tasks,{"a":1}', "list starting with its name"),
        ("2/tasks,[]", "list starting with its name"),
        ("2/tasks,[1, 2]", "list starting with its name"),
        ("2/tasks,", "list starting with its name"),
        ("3/tasks,[]", "ack needs an id"),
        ("3/tasks,4{}", "ack needs an id"),
        ("0/tasks,[1]", "connect payload"),
        ('51-/tasks,["upload",{"_placeholder":true,"num":0}]', "binary"),
        ("61-/tasks,3[]", "binary"),
    ],
)
def test_malformed_socketio_packets_are_codec_errors(text: str, complaint: str) -> None:
    with pytest.raises(CodecError, match=complaint):
        codec.decode_sio(text)


def test_encoding_data_that_is_not_json_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="cannot encode"):
        codec.event_frame("/tasks", "algorithm_log", {"log": object()})
    with pytest.raises(CodecError, match="cannot encode"):
        codec.event_frame("/tasks", "node_metrics_update", {"cpu": float("nan")})


def test_encoding_binary_packets_is_refused() -> None:
    with pytest.raises(CodecError, match="binary"):
        codec.encode_sio(SioPacket(SioType.BINARY_EVENT, "/tasks", ["x"]))


# --- complete frames as the node sends them -----------------------------------------
def test_connect_frame_joins_the_namespace() -> None:
    assert codec.connect_frame("/tasks") == "40/tasks,"


def test_an_event_without_data_has_only_its_name_like_the_reference_ping() -> None:
    assert codec.event_frame("/tasks", "ping") == '42/tasks,["ping"]'


def test_an_event_with_data_carries_one_argument() -> None:
    frame = codec.event_frame("/tasks", "algorithm_status_change", {"run_id": 3, "status": "active"})
    assert frame == '42/tasks,["algorithm_status_change",{"run_id":3,"status":"active"}]'


def test_an_event_can_ask_for_an_ack() -> None:
    assert codec.event_frame("/tasks", "ping", ack_id=4) == '42/tasks,4["ping"]'


def test_ack_frame_answers_with_the_same_id() -> None:
    assert codec.ack_frame("/tasks", 9) == "43/tasks,9[]"
    assert codec.ack_frame("/tasks", 9, ["ok", 1]) == '43/tasks,9["ok",1]'


def test_a_sent_frame_decodes_to_the_same_event() -> None:
    data = {"kill_list": [], "text": "é ü ✓", "nested": {"a": [1, 2.5, None, True]}}
    frame = codec.event_frame("/tasks", "x", data)

    packet = codec.decode_sio(codec.decode_eio(frame).data)

    assert packet.namespace == "/tasks"
    assert packet.event == ("x", [data])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


@given(
    name=st.text(min_size=1),
    data=json_values,
    namespace=st.sampled_from(["/", "/tasks", "/admin"]),
    ack_id=st.none() | st.integers(min_value=0, max_value=2**31),
)
def test_any_json_event_survives_a_round_trip(name: str, data: object, namespace: str, ack_id: int | None) -> None:
    frame = codec.event_frame(namespace, name, data, ack_id)

    packet = codec.decode_sio(codec.decode_eio(frame).data)

    args = [] if data is None else [data]
    assert packet == SioPacket(SioType.EVENT, namespace, [name, *args], ack_id)


# --- server events -> domain events --------------------------------------------------
def test_sync_asks_for_a_queue_sync() -> None:
    assert codec.to_domain_event("sync", []) == SyncRequested()


def test_new_task_names_the_task_and_its_parent() -> None:
    assert codec.to_domain_event("new_task", [{"id": 7, "parent_id": 3}]) == NewTask(task_id=7, parent_id=3)
    assert codec.to_domain_event("new_task", [{"id": 7, "parent_id": None}]) == NewTask(task_id=7, parent_id=None)
    assert codec.to_domain_event("new_task", [{"id": 7}]) == NewTask(task_id=7)


def test_a_task_kill_lists_its_targets() -> None:
    payload = {
        "kill_list": [
            {"task_id": 4, "run_id": 10, "organization_id": 2},
            {"task_id": 5, "run_id": 11, "organization_id": 3},
        ],
        "collaboration_id": 1,
    }

    event = codec.to_domain_event("kill_containers", [payload])

    assert event == KillRequested(
        KillOrder(
            collaboration_id=1,
            targets=(KillTarget(run_id=10, task_id=4, organization_id=2), KillTarget(run_id=11, task_id=5, organization_id=3)),
        )
    )
    assert not event.order.node_wide


def test_a_node_kill_names_the_node_and_no_targets() -> None:
    event = codec.to_domain_event("kill_containers", [{"node_id": 8, "collaboration_id": 1}])

    assert event == KillRequested(KillOrder(collaboration_id=1, node_id=8, node_wide=True))
    assert event.order.node_wide


def test_a_task_kill_with_an_empty_list_kills_nothing() -> None:
    event = codec.to_domain_event("kill_containers", [{"kill_list": [], "collaboration_id": 1}])

    assert event == KillRequested(KillOrder(collaboration_id=1))
    assert not event.order.node_wide


def test_token_events_map_to_their_domain_events() -> None:
    assert codec.to_domain_event("expired_token", []) == TokenExpired()
    assert codec.to_domain_event("invalid_token", []) == TokenInvalid()


def test_a_message_is_passed_on_as_text() -> None:
    assert codec.to_domain_event("message", ["Node <a> joined room <collaboration_1>"]) == ServerMessage(
        "Node <a> joined room <collaboration_1>"
    )


def test_a_status_change_of_another_run_is_reported() -> None:
    payload = {
        "status": "crashed",
        "run_id": 12,
        "task_id": 6,
        "job_id": 6,
        "collaboration_id": 1,
        "node_id": 9,
        "organization_id": 2,
        "parent_id": None,
    }

    event = codec.to_domain_event("algorithm_status_change", [payload])

    assert event == PeerStatusChanged(run_id=12, task_id=6, status="crashed", organization_id=2)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("node-online", [{"id": 1, "name": "n", "org_id": 2}]),
        ("node-offline", [{"id": 1, "name": "n", "org_id": 2}]),
        ("status_update", [{"run_id": 3}]),
        ("algorithm_log", [{"run_id": 3, "task_id": 2, "log": "line"}]),
        ("node-status-changed", []),
        ("something_new", ["whatever", 1]),
    ],
)
def test_events_the_node_does_not_act_on_are_ignored(name: str, args: list) -> None:
    assert codec.to_domain_event(name, args) is None


@pytest.mark.parametrize(
    ("name", "args", "complaint"),
    [
        ("new_task", [], "expected an object"),
        ("new_task", [[7]], "expected an object"),
        ("new_task", [{"parent_id": 1}], "'id' must be an integer"),
        ("new_task", [{"id": "7"}], "'id' must be an integer"),
        ("new_task", [{"id": True}], "'id' must be an integer"),
        ("new_task", [{"id": 7, "parent_id": "x"}], "'parent_id' must be an integer"),
        ("kill_containers", ["all"], "expected an object"),
        ("kill_containers", [{"kill_list": {"run_id": 1}, "collaboration_id": 1}], "kill_list must be a list"),
        ("kill_containers", [{"kill_list": [5], "collaboration_id": 1}], "kill_list entry"),
        ("kill_containers", [{"kill_list": [{"task_id": 1, "organization_id": 2}], "collaboration_id": 1}], "'run_id'"),
        ("kill_containers", [{"node_id": "8", "collaboration_id": 1}], "'node_id'"),
        ("message", [], "expected a string"),
        ("message", [{"text": "hi"}], "expected a string"),
        ("algorithm_status_change", [{"run_id": 1, "task_id": 2}], "'status' must be a string"),
        ("algorithm_status_change", [{"status": "active", "run_id": "1"}], "'run_id'"),
    ],
)
def test_malformed_event_payloads_are_codec_errors_naming_the_event(name: str, args: list, complaint: str) -> None:
    with pytest.raises(CodecError, match=complaint) as raised:
        codec.to_domain_event(name, args)
    assert name in str(raised.value)


def test_events_decoded_from_real_frames_map_end_to_end() -> None:
    frames = [
        '42/tasks,["sync"]',
        '42/tasks,["message","Node <p-node0> joined room <collaboration_1>"]',
        '42/tasks,["new_task",{"id":2,"parent_id":null}]',
        '42/tasks,["kill_containers",' + json.dumps({"kill_list": [{"task_id": 2, "run_id": 3, "organization_id": 4}], "collaboration_id": 1}) + "]",
        '42/tasks,["invalid_token"]',
    ]

    events = [codec.to_domain_event(*codec.decode_sio(codec.decode_eio(f).data).event) for f in frames]

    assert events == [
        SyncRequested(),
        ServerMessage("Node <p-node0> joined room <collaboration_1>"),
        NewTask(task_id=2, parent_id=None),
        KillRequested(KillOrder(collaboration_id=1, targets=(KillTarget(run_id=3, task_id=2, organization_id=4),))),
        TokenInvalid(),
    ]
