"""The Scylla backend's pure parts: URL and options, password masking, CQL text, stored formats.

None of this connects to a cluster (the driver is only imported on first use).
"""

from __future__ import annotations

import re
import uuid

import pytest

from state.constants import DEFAULT_RETENTION_S, SCHEMA_VERSION, STATUS_BUCKET_S
from state.errors import ConfigError, StateError
from state.keys import bucket_of, shard_of
from state.records import OutboxMessage
from state.scylla import (
    ScyllaConfig,
    ScyllaStore,
    format_replication,
    parse_replication,
    parse_scylla_url,
)
from state.scylla.effects import (
    Effects,
    FailRun,
    HistoryItem,
    IndexMove,
    decode_effects,
    encode_effects,
)
from state.scylla.rows import timeuuid
from state.scylla.schema import STATEMENTS, keyspace_cql, migrations, table_cql
from state.url import open_store, state_url_from_env

SECRET = "s3cr3t:p@ss/word"


# --- hosts, keyspace, credentials -----------------------------------------------------------
def test_hosts_ports_and_keyspace() -> None:
    cfg = parse_scylla_url("scylla://10.0.0.1:19042,db2,[::1]:9043,fe80::1/runs_ks")
    assert cfg.hosts == (("10.0.0.1", 19042), ("db2", 9042), ("::1", 9043), ("fe80::1", 9042))
    assert cfg.keyspace == "runs_ks"


def test_defaults() -> None:
    cfg = parse_scylla_url("scylla://db")
    assert cfg.keyspace == "flowbridge"
    assert cfg.consistency == "LOCAL_QUORUM" and cfg.serial_consistency == "LOCAL_SERIAL"
    assert cfg.replication_map() == {"class": "SimpleStrategy", "replication_factor": "1"}
    assert cfg.retention_s == DEFAULT_RETENTION_S and cfg.dc is None and not cfg.ssl
    assert cfg.username is None and cfg.password is None and cfg.protocol_version is None


def test_cassandra_scheme_is_accepted() -> None:
    assert parse_scylla_url("cassandra://db/ks").keyspace == "ks"


@pytest.mark.parametrize(
    "url",
    [
        "postgres://db/ks",
        "scylla:/db/ks",
        "scylla:///ks",
        "scylla://db,,other/ks",
        "scylla://db:notaport/ks",
        "scylla://db:70000/ks",
        "scylla://db/1starts_with_digit",
        "scylla://db/has-dash",
        "scylla://db/" + "k" * 49,
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_scylla_url(url)


def test_credentials_from_the_url_are_unquoted() -> None:
    cfg = parse_scylla_url("scylla://app%40corp:s3cr3t%3Ap%40ss%2Fword@db/ks")
    assert cfg.username == "app@corp" and cfg.password == SECRET


def test_credentials_from_env() -> None:
    env = {"SCYLLA_USERNAME": "svc", "SCYLLA_PASSWORD": SECRET}
    cfg = parse_scylla_url("scylla://db/ks", env=env)
    assert (cfg.username, cfg.password) == ("svc", SECRET)
    # The URL wins; a user in the URL may take its password from the environment.
    cfg = parse_scylla_url("scylla://me:mine@db/ks", env=env)
    assert (cfg.username, cfg.password) == ("me", "mine")
    cfg = parse_scylla_url("scylla://me@db/ks", env={"SCYLLA_PASSWORD": SECRET})
    assert (cfg.username, cfg.password) == ("me", SECRET)


def test_a_password_needs_a_user() -> None:
    with pytest.raises(ConfigError, match="SCYLLA_USERNAME"):
        parse_scylla_url("scylla://db/ks", env={"SCYLLA_PASSWORD": SECRET})


# --- options --------------------------------------------------------------------------------
def test_options() -> None:
    cfg = parse_scylla_url(
        "scylla://db/ks?dc=eu-west_1&consistency=quorum&serial_consistency=serial"
        "&replication=NetworkTopologyStrategy:eu-west_1=3,us=2&protocol_version=4"
        "&retention_days=7&index_lookback_days=2&connect_timeout=3.5&request_timeout=20"
    )
    assert cfg.dc == "eu-west_1"
    assert (cfg.consistency, cfg.serial_consistency) == ("QUORUM", "SERIAL")
    assert cfg.replication_map() == {
        "class": "NetworkTopologyStrategy",
        "eu-west_1": "3",
        "us": "2",
    }
    assert cfg.protocol_version == 4
    assert cfg.retention_s == 7 * 86400 and cfg.index_lookback_s == 2 * 86400
    assert (cfg.connect_timeout_s, cfg.request_timeout_s) == (3.5, 20.0)


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("consistency=ANY", "consistency"),
        ("serial_consistency=LOCAL_QUORUM", "serial_consistency"),
        ("replication=SimpleStrategy", "replication"),
        ("replication=SimpleStrategy:0", "replication"),
        ("replication=EverywhereStrategy:3", "replication"),
        ("replication=NetworkTopologyStrategy:dc1", "replication"),
        ("replication=NetworkTopologyStrategy:dc'1=3", "datacenter"),
        ("dc=a b", "dc"),
        ("protocol_version=3", "protocol_version"),
        ("retention_days=0", "retention_days"),
        ("retention_days=forever", "retention_days"),
        ("connect_timeout=-1", "connect_timeout"),
        ("ssl=maybe", "ssl"),
        ("ssl_ca=", "ssl_ca"),
        ("ssl=false&ssl_ca=/ca.pem", "ssl=false"),
        ("replica=3", "unknown"),
    ],
)
def test_bad_options(query: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_scylla_url(f"scylla://db/ks?{query}")


def test_replication_forms_round_trip() -> None:
    for text in (
        "SimpleStrategy:3",
        "NetworkTopologyStrategy:3",
        "NetworkTopologyStrategy:a=3,b=1",
    ):
        assert format_replication(dict(parse_replication(text))) == text


def test_tls_options() -> None:
    cfg = parse_scylla_url("scylla://db/ks?ssl_ca=/etc/ca.pem&ssl_cert=/c.pem&ssl_key=/k.pem")
    assert cfg.ssl and cfg.ssl_ca == "/etc/ca.pem"
    assert (cfg.ssl_cert, cfg.ssl_key) == ("/c.pem", "/k.pem")
    assert not cfg.ssl_check_hostname
    cfg = parse_scylla_url("scylla://db/ks?ssl=true&ssl_check_hostname=yes")
    assert cfg.ssl and cfg.ssl_check_hostname and cfg.ssl_ca is None


# --- secrets are never shown ----------------------------------------------------------------
def test_password_is_masked_everywhere() -> None:
    url = "scylla://app:s3cr3t%3Ap%40ss%2Fword@db1:9042,db2/ks?dc=dc1&ssl=true"
    cfg = parse_scylla_url(url)
    store = ScyllaStore.from_url(url, env={})
    for text in (repr(cfg), str(cfg), repr(store), cfg.redacted_url()):
        assert SECRET not in text and "s3cr3t" not in text
    assert cfg.redacted_url().startswith("scylla://app:***@db1:9042,db2:9042/ks?dc=dc1")


def test_errors_do_not_quote_the_url() -> None:
    with pytest.raises(ConfigError) as info:
        parse_scylla_url("scylla://app:s3cr3t@db:bad/ks")
    assert "s3cr3t" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_scylla_url("scylla://app:s3cr3t@db/ks?nope=1")
    assert "s3cr3t" not in str(info.value)


# --- opening from the environment (lazily: no connection) ----------------------------------
def test_open_store_from_env_is_lazy() -> None:
    url = state_url_from_env({"SCYLLA_HOSTS": "db1,db2:19042", "SCYLLA_KEYSPACE": "prod"})
    store = open_store(url, env={"SCYLLA_USERNAME": "svc", "SCYLLA_PASSWORD": SECRET})
    assert isinstance(store, ScyllaStore)
    assert store.config.hosts == (("db1", 9042), ("db2", 19042))
    assert store.config.keyspace == "prod" and store.config.password == SECRET
    assert store._conn is None  # nothing connected yet
    store.close()


def test_from_url_takes_the_retention_setting() -> None:
    store = ScyllaStore.from_url("scylla://db/ks?retention_days=1", env={}, retention_s=7200)
    assert store.retention_s == 7200 and store._ttl == 7200
    assert ScyllaStore.from_url("scylla://db/ks?retention_days=1", env={})._ttl == 86400


def test_constructor_options_override_the_url() -> None:
    cfg = parse_scylla_url("scylla://db/ks?retention_days=1")
    store = ScyllaStore(cfg, retention_s=2.4, index_lookback_s=3600)
    assert store.retention_s == 2.4 and store._ttl == 3  # CQL TTLs are whole seconds, rounded up
    assert store.index_lookback_s == 3600
    assert isinstance(store.config, ScyllaConfig)


# --- CQL text -------------------------------------------------------------------------------
def _primary_keys() -> dict[str, tuple[list[str], list[str]]]:
    keys: dict[str, tuple[list[str], list[str]]] = {}
    for ddl in table_cql("ks"):
        table = re.search(r"ks\.(\w+)", ddl).group(1)  # type: ignore[union-attr]
        inline = re.search(r"(\w+) \w+ PRIMARY KEY", ddl)
        if inline:
            keys[table] = ([inline.group(1)], [])
            continue
        spec = re.search(r"PRIMARY KEY \((.+)\)\s*\)", ddl, re.S).group(1)  # type: ignore[union-attr]
        if spec.startswith("("):
            part, _, rest = spec[1:].partition(")")
            partition = [c.strip() for c in part.split(",")]
            clustering = [c.strip() for c in rest.split(",") if c.strip()]
        else:
            cols = [c.strip() for c in spec.split(",")]
            partition, clustering = cols[:1], cols[1:]
        keys[table] = (partition, clustering)
    return keys


def test_every_statement_names_a_whole_partition_key() -> None:
    """What a reviewer checks: no query can scan (no ALLOW FILTERING, no index, no range)."""
    keys = _primary_keys()
    assert set(keys) == {
        "schema_version", "runs", "nodes", "run_nodes", "arrivals", "context", "history",
        "run_index", "run_index_buckets", "outbox", "outbox_cursor",
        "waits", "inbox", "timers", "timer_buckets", "batch_pages",
        "wf_runs", "wf_history", "wf_inbox", "wf_timers", "wf_timer_buckets",
    }  # fmt: skip
    for name, cql in STATEMENTS.items():
        assert "ALLOW FILTERING" not in cql.upper() and "TOKEN(" not in cql.upper(), name
        table = re.search(r"\{ks\}\.(\w+)", cql).group(1)  # type: ignore[union-attr]
        partition, clustering = keys[table]
        if cql.startswith("INSERT"):
            cols = re.search(r"\(([^)]*)\) VALUES", cql).group(1)  # type: ignore[union-attr]
            assert set(partition + clustering) <= {c.strip() for c in cols.split(",")}, name
            continue
        where = re.search(r"WHERE (.+?)(?: IF | LIMIT |$)", cql).group(1)  # type: ignore[union-attr]
        equal = set(re.findall(r"(\w+) = ", where))
        assert set(partition) <= equal, f"{name} does not name the partition key of {table}"
        if not cql.startswith("SELECT"):
            assert set(clustering) <= equal, f"{name} writes a range of {table}"


def test_statements_use_bind_markers_only_for_values() -> None:
    for name, cql in STATEMENTS.items():
        text = cql.format(ks="ks")
        assert "{" not in text and "%" not in text, name
        # Every LWT is a single-row conditional write (no conditional batch, no USING TIMESTAMP).
        if " IF " in text:
            assert "TIMESTAMP" not in text, name


def test_keyspace_cql() -> None:
    rep = {"class": "NetworkTopologyStrategy", "dc1": "3"}
    cql = keyspace_cql("flowbridge", rep, tablets_off=False)
    assert cql == (
        "CREATE KEYSPACE IF NOT EXISTS flowbridge WITH replication = "
        "{'class': 'NetworkTopologyStrategy', 'dc1': '3'} AND durable_writes = true"
    )
    assert keyspace_cql("ks", rep, tablets_off=True).endswith("AND tablets = {'enabled': false}")
    with pytest.raises(StateError):
        keyspace_cql("ks; DROP KEYSPACE x", rep, tablets_off=False)


def test_tables_are_created_idempotently() -> None:
    ddl = table_cql("ks")
    assert all(d.startswith("CREATE TABLE IF NOT EXISTS ks.") for d in ddl)
    assert migrations("ks", from_version=1, to_version=1) == []
    assert migrations("ks", from_version=SCHEMA_VERSION, to_version=SCHEMA_VERSION) == []


def test_schema_2_adds_the_wait_columns_to_nodes() -> None:
    """A v1 keyspace gets the node columns by ALTER; a fresh one has them in its DDL."""
    [(version, statements)] = migrations("ks", from_version=1, to_version=2)
    assert version == 2
    added = {re.match(r"ALTER TABLE ks\.nodes ADD (\w+) \w+$", s).group(1) for s in statements}  # type: ignore[union-attr]
    assert added == {"wait_event", "wait_due", "wait_bucket", "wait_op", "woken", "woke_event"}
    nodes_ddl = next(d for d in table_cql("ks") if "ks.nodes" in d)
    assert all(f" {col} " in nodes_ddl for col in added)
    # Every one of them is read, and rewritten with the TTL when the run finishes.
    for col in added:
        assert col in STATEMENTS["node_get"] and f"{col} = ?" in STATEMENTS["node_rewrite"]


def test_lwt_columns_of_the_inbox_and_waits() -> None:
    """Inbox rows are written only by LWT; waits rows and timer hints never are."""
    for name, cql in STATEMENTS.items():
        if "{ks}.inbox " in cql and not cql.startswith("SELECT") and name != "inbox_marker":
            assert " IF " in cql, name
        if "{ks}.waits " in cql or "{ks}.timers " in cql or "{ks}.timer_buckets " in cql:
            assert " IF " not in cql, name
    assert "IF NOT EXISTS" in STATEMENTS["inbox_put"]
    assert "IF consumed_by = null" in STATEMENTS["inbox_claim"]
    for name in ("node_park", "node_unpark", "node_wake", "node_consumed", "run_cas"):
        assert STATEMENTS[name].endswith("lwt_op = ?"), name


def test_timer_hints_are_judged_against_their_node() -> None:
    from state.scylla.waits import _verdict

    hint = {"park_op": "p1"}
    run = {"status": "waiting"}
    parked = {"status": "waiting", "wait_op": "p1", "woken": None}
    assert _verdict(hint, parked, run) == "due"
    assert _verdict(hint, parked, {"status": "cancelled"}) == "stale"
    assert _verdict(hint, parked, None) == "stale"
    assert _verdict(hint, None, run) == "stale"
    assert _verdict(hint, {**parked, "woken": "timer", "status": "pending"}, run) == "stale"
    assert _verdict(hint, {**parked, "status": "cancelled"}, run) == "stale"
    # A park whose node write has not landed yet: keep its hint.
    assert _verdict(hint, {"status": "running", "wait_op": None, "woken": None}, run) == "keep"
    # An older park's hint once the node parked again.
    assert _verdict(hint, {**parked, "wait_op": "p2"}, run) == "stale"
    # Retried while parked: it may park again with the same deadline.
    assert _verdict(hint, {**parked, "status": "pending"}, run) == "keep"


def test_clear_writes_no_tombstone_for_nothing() -> None:
    from state.scylla.driver import UNSET
    from state.scylla.rows import clear as _clear

    assert _clear("x", None) == "x" and _clear("x", "y") == "x"
    assert _clear(None, "y") is None
    assert _clear(None, None) is UNSET


# --- stored formats and helpers -------------------------------------------------------------
def test_effects_round_trip() -> None:
    msg = OutboxMessage(id="m1", topic="t", key=None, value={"a": [1, "é"]}, created_at=1.5)
    full = Effects(
        at=1.5,
        ts=1_500_000,
        iteration=2,
        history=(
            HistoryItem(
                event_id=str(timeuuid(1_500_000)), kind="node.completed", node_id="a", data={"x": 1}
            ),
        ),
        outbox=(msg,),
        touch=True,
        pending=("b",),
        skipped=("c", "d"),
        arrivals=(("j", "a", "completed"),),
        context={"k": None, "n": {"deep": True}},
        fallback="fb",
        fail_run=FailRun(error="boom", outbox=(msg,)),
        start_nodes=("s",),
        index=IndexMove(status="failed", bucket=7, old_status="running", old_bucket=3),
        finish=True,
        cancel_nodes="stop",
        wake_run=True,
        timer=(123, 7380.5, "park-1"),
    )
    assert decode_effects(encode_effects(full)) == full
    bare = Effects(at=2.0, ts=2_000_000)
    assert decode_effects(encode_effects(bare)) == bare and bare.empty and not full.empty
    assert decode_effects(None) is None and decode_effects("") is None
    with pytest.raises(StateError, match="format"):
        decode_effects('{"v": 99, "at": 1, "ts": 1}')


def test_timeuuids_sort_by_time() -> None:
    ids = [timeuuid(1_700_000_000_000_000 + i) for i in range(100)]
    assert all(u.version == 1 for u in ids)
    assert [u.time for u in ids] == sorted(u.time for u in ids)
    assert len(set(ids)) == 100
    assert isinstance(ids[0], uuid.UUID)


def test_buckets_and_shards() -> None:
    assert (
        bucket_of(STATUS_BUCKET_S * 10 + 0.5) == 10 and bucket_of(STATUS_BUCKET_S * 10 - 0.5) == 9
    )
    assert shard_of("run-1", 8) == shard_of("run-1", 8)
    assert {shard_of(f"run-{i}", 4) for i in range(200)} == {0, 1, 2, 3}


def test_every_host_is_dialled_on_its_own_port() -> None:
    from cassandra.connection import DefaultEndPoint

    from state.scylla.driver import _contact_points

    one = _contact_points((("127.0.0.1", 41161),))
    # The session's pools use Cluster.port, not the contact point's: it must be the URL's.
    assert one["port"] == 41161
    assert one["contact_points"] == [DefaultEndPoint("127.0.0.1", 41161)]
    assert "endpoint_factory" not in one

    mixed = _contact_points((("10.0.0.1", 9042), ("10.0.0.2", 9142), ("10.0.0.3", 9042)))
    assert mixed["port"] == 9042
    factory = mixed["endpoint_factory"]

    class _Cluster:
        class address_translator:
            @staticmethod
            def translate(addr: str) -> str:
                return addr

    factory.configure(_Cluster)
    peer = {"rpc_address": "10.0.0.2", "peer": "10.0.0.2"}
    assert factory.create(peer) == DefaultEndPoint("10.0.0.2", 9142)
    assert factory.create({"rpc_address": "10.0.0.3", "peer": "10.0.0.3"}).port == 9042
