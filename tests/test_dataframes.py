"""DataFrames through the broker (CBOR tag 80, Arrow IPC) with every driver."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from cbor2 import CBORTag

from behaviour_drivers import DRIVERS, Collector, Session, in_process_broker
from rembus import RembusError

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=DRIVERS)
def session(request: pytest.FixtureRequest) -> Iterator[Session]:
    with in_process_broker() as url:
        s = Session(str(request.param), url)
        try:
            yield s
        finally:
            s.close()


def table() -> object:
    return pa.table({"id": [1, 2, 3], "name": ["a", "b", None], "x": [0.5, 1.5, 2.5]})


def test_pyarrow_table_round_trip(session: Session) -> None:
    sub, pub = session.component("df_sub"), session.component()
    got = Collector()
    sub.subscribe(got, topic="frames")
    sub.expose(lambda t: t.num_rows, topic="rows")
    sub.expose(lambda: table(), topic="make")
    pub.publish("frames", table(), "label")
    [(received, label)] = got.wait_for(1)
    assert isinstance(received, pa.Table) and received.equals(table())
    assert label == "label"
    assert pub.rpc("rows", table()) == 3
    assert pub.rpc("make").equals(table())


def test_pandas_frame_round_trip(session: Session) -> None:
    sub = session.component("pd_sub", dataframe="pandas")
    pub = session.component(dataframe="pandas")
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    got = Collector()
    sub.subscribe(got, topic="frames")
    sub.expose(lambda df: df.assign(c=df["a"] * 2), topic="double")
    pub.publish("frames", frame)
    [received] = got.wait_for(1)
    assert isinstance(received, pd.DataFrame)
    pd.testing.assert_frame_equal(received, frame)
    doubled = pub.rpc("double", frame)
    assert list(doubled["c"]) == [2, 4]


def test_polars_frame_round_trip(session: Session) -> None:
    pl = pytest.importorskip("polars")
    sub = session.component("pl_sub", dataframe="polars")
    pub = session.component(dataframe="polars")
    frame = pl.DataFrame({"a": [1, 2], "b": ["x", None], "f": [0.25, 1.5]})
    got = Collector()
    sub.subscribe(got, topic="frames")
    sub.expose(lambda df: df.with_columns((pl.col("a") * 2).alias("c")), topic="double")
    pub.publish("frames", frame)
    [received] = got.wait_for(1)
    assert isinstance(received, pl.DataFrame) and received.equals(frame)
    doubled = pub.rpc("double", frame)
    assert isinstance(doubled, pl.DataFrame) and doubled["c"].to_list() == [2, 4]


def test_a_frame_crosses_libraries(session: Session) -> None:
    pl = pytest.importorskip("polars")
    sub = session.component("mixed_sub", dataframe="pandas")
    pub = session.component(dataframe="polars")
    got = Collector()
    sub.subscribe(got, topic="frames")
    pub.publish("frames", pl.DataFrame({"a": [1, 2]}))
    [received] = got.wait_for(1)
    assert isinstance(received, pd.DataFrame) and list(received["a"]) == [1, 2]


def test_plain_values_do_not_import_pyarrow() -> None:
    script = textwrap.dedent("""
        import asyncio, sys
        sys.path.insert(0, sys.argv[1])
        import rembus
        from rembus.client import dataframes
        from behaviour_drivers import Collector, in_process_broker

        async def main(url):
            sub = await rembus.component(url + "/plain_sub")
            got = Collector()
            await sub.subscribe(got, topic="t")
            pub = await rembus.component(url)
            await pub.publish("t", 1, "two", [3.0], {"four": b"4"})
            await asyncio.to_thread(got.wait_for, 1)
            await pub.close()
            await sub.close()

        with in_process_broker() as url:
            asyncio.run(main(url))
        print("loaded" if dataframes.pyarrow_loaded() else "not loaded")
    """)
    tests_dir = str(Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", script, tests_dir], capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "not loaded"


def test_nested_dataframes_at_any_depth(session: Session) -> None:
    pl = pytest.importorskip("polars")
    sub = session.component("nested_sub", dataframe="pandas")
    pub = session.component()
    got = Collector()
    sub.subscribe(got, topic="nested")
    sub.expose(lambda: [pd.DataFrame({"a": [1, 2]}), "text", {"deep": [table()]}],
               topic="make_nested")
    sub.expose(lambda box: box["frames"][1]["a"].tolist(), topic="read_nested")
    pub.publish("nested", {"frames": [table(), pl.DataFrame({"b": [3]})]}, [[table()]])
    [(mapping, listed)] = got.wait_for(1)
    first, second = mapping["frames"]
    assert isinstance(first, pd.DataFrame) and list(first["id"]) == [1, 2, 3]
    assert isinstance(second, pd.DataFrame) and list(second["b"]) == [3]
    assert isinstance(listed[0][0], pd.DataFrame)
    made = pub.rpc("make_nested")
    assert made[0].equals(pa.table({"a": [1, 2]})) and made[1] == "text"
    assert made[2]["deep"][0].equals(table())
    assert pub.rpc("read_nested", {"frames": ["x", pl.DataFrame({"a": [7, 8]})]}) == [7, 8]


def test_corrupt_dataframe_is_dropped_and_the_component_goes_on(session: Session) -> None:
    sub, pub = session.component("corrupt_sub"), session.component()
    got = Collector()
    sub.subscribe(got, topic="frames")
    sub.expose(lambda t: t.num_rows, topic="rows")
    bad = CBORTag(80, b"not an Arrow stream")
    pub.publish("frames", [bad])  # tag 80 holding garbage, nested
    pub.publish("frames", bad)
    pub.publish("frames", table())
    [received] = got.wait_for(1)
    assert received.equals(table())
    assert sub.dropped_messages == 2
    with pytest.raises(RembusError, match="malformed arguments"):
        pub.rpc("rows", bad)
    assert pub.rpc("rows", table()) == 3
    sub.expose(lambda: bad, topic="bad_result")
    with pytest.raises(RembusError, match="malformed response"):
        pub.rpc("bad_result")
    assert pub.rpc("rows", table()) == 3
