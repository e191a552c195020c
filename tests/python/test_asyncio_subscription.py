"""asyncio: `async for`, `get_async`, and real asyncio MQTT clients (aiomqtt)."""

from __future__ import annotations

import asyncio
import threading

import pytest

uringmq = pytest.importorskip("uringmq")
aiomqtt = pytest.importorskip("aiomqtt")

WAIT = 5.0


@pytest.fixture
def broker():
    with uringmq.Broker(port=0, cores=2, pin_cores=False) as b:
        yield b


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_async_for_yields_messages_published_later(broker):
    async def main():
        sub = broker.subscribe("a/#")

        async def publisher():
            for i in range(5):
                await asyncio.sleep(0.01)
                broker.publish(f"a/{i}", str(i))

        task = asyncio.create_task(publisher())
        seen = []
        async for m in sub:
            seen.append((m.topic, m.payload))
            if len(seen) == 5:
                break
        await task
        sub.close()
        return seen

    assert run(main()) == [(f"a/{i}", str(i).encode()) for i in range(5)]


def test_get_async_timeout_and_loop_stays_responsive(broker):
    async def main():
        with broker.subscribe("none") as sub:
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.005)
                    ticks += 1

            t = asyncio.create_task(ticker())
            with pytest.raises(TimeoutError):
                await sub.get_async(timeout=0.2)
            t.cancel()
            return ticks

    # The loop kept running other tasks while the subscription waited.
    assert run(main()) > 0


def test_message_from_another_thread_wakes_the_loop(broker):
    async def main():
        async with broker.subscribe("x") as sub:
            threading.Timer(0.05, broker.publish, ("x", b"from-thread")).start()
            return (await sub.get_async(timeout=WAIT)).payload

    assert run(main()) == b"from-thread"


def test_several_tasks_await_one_subscription(broker):
    async def main():
        with broker.subscribe("m") as sub:
            waiters = [asyncio.create_task(sub.get_async(timeout=WAIT)) for _ in range(3)]
            await asyncio.sleep(0.05)
            for i in range(3):
                broker.publish("m", str(i))
            return sorted([(await w).payload for w in waiters])

    assert run(main()) == [b"0", b"1", b"2"]


def test_close_and_stop_end_async_iteration(broker):
    async def main():
        sub = broker.subscribe("c")
        got = []

        async def consume():
            async for m in sub:
                got.append(m.payload)

        task = asyncio.create_task(consume())
        broker.publish("c", b"1")
        await asyncio.sleep(0.05)
        sub.close()
        await asyncio.wait_for(task, WAIT)

        other = broker.subscribe("d")
        pending = asyncio.create_task(other.get_async())
        await asyncio.sleep(0.05)
        await asyncio.get_running_loop().run_in_executor(None, broker.stop)
        with pytest.raises(uringmq.SubscriptionClosed):
            await asyncio.wait_for(pending, WAIT)
        return got

    assert run(main()) == [b"1"]


def test_one_subscription_used_by_successive_event_loops(broker):
    sub = broker.subscribe("loops")
    for i in range(3):
        broker.publish("loops", str(i))
        assert run(sub.get_async(timeout=WAIT)).payload == str(i).encode()
        # A timed-out wait leaves nothing registered with the finished loop.
        with pytest.raises(TimeoutError):
            run(sub.get_async(timeout=0.01))
    sub.close()


def test_aiomqtt_client_and_in_process_subscriber(broker):
    async def main():
        sub = await broker.subscribe_async("room/+/temp", qos=1)
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.subscribe("cmd/#", qos=1)
            await client.publish("room/1/temp", b"22", qos=1)
            m = await sub.get_async(timeout=WAIT)
            assert (m.topic, m.payload, m.qos) == ("room/1/temp", b"22", 1)
            broker.publish("cmd/heat", b"on", qos=1)
            async for message in client.messages:
                assert (str(message.topic), message.payload) == ("cmd/heat", b"on")
                break
        sub.close()

    run(main())


def test_async_context_manager_broker():
    async def main():
        async with uringmq.Broker(port=0, cores=1, pin_cores=False) as b:
            assert b.is_running
            async with aiomqtt.Client(b.host, b.port) as client:
                await client.publish("t", b"x")
        return b

    assert not run(main()).is_running
