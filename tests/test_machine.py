"""The state machine's table and driver, with fake state handlers (pure unit tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from transitions.core import MachineError

from controller.machine import (
    FAILED,
    IDLE,
    INVENTORY,
    PLAN,
    REMOVE,
    VALIDATE,
    VERIFY_ROLLBACK,
    WORKING_STATES,
    PruneMachine,
)


@dataclass
class FakeContext:
    error: str | None = None
    failed_state: str | None = None
    calls: list[str] = field(default_factory=list)

    def fail(self, state: str, error: BaseException) -> None:
        self.failed_state, self.error = state, f"{state}: {error}"


def handlers(**overrides):
    def make(state: str, trigger: str):
        def handle(ctx: FakeContext) -> str:
            ctx.calls.append(state)
            return trigger

        return handle

    table = {
        INVENTORY: make(INVENTORY, "inventoried"),
        PLAN: make(PLAN, "planned"),
        VERIFY_ROLLBACK: make(VERIFY_ROLLBACK, "verified"),
        REMOVE: make(REMOVE, "removed"),
        VALIDATE: make(VALIDATE, "validated"),
    }
    table.update(overrides)
    return table


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def run(machine: PruneMachine, provider: TracerProvider, ctx: FakeContext) -> str:
    with provider.get_tracer("test").start_as_current_span("edgeprune.run") as root:
        return machine.run(ctx, root)


def test_full_run_visits_every_state_in_order_and_traces_each_transition(spans) -> None:
    provider, exporter = spans
    machine = PruneMachine(handlers(), tracer=provider.get_tracer("t"))
    final = run(machine, provider, FakeContext())
    assert final == IDLE
    assert machine.visited == [IDLE, INVENTORY, PLAN, VERIFY_ROLLBACK, REMOVE, VALIDATE, IDLE]

    finished = exporter.get_finished_spans()
    root = next(s for s in finished if s.name == "edgeprune.run")
    children = [s for s in finished if s.parent and s.parent.span_id == root.context.span_id]
    assert [s.attributes["edgeprune.state"] for s in children] == [
        INVENTORY,
        PLAN,
        VERIFY_ROLLBACK,
        REMOVE,
        VALIDATE,
    ]
    # source is the state left, not the destination (the transitions after-callback trap)
    events = [
        (e.attributes["source"], e.attributes["dest"], e.attributes["trigger"])
        for e in root.events
        if e.name == "transition"
    ]
    assert events == [
        (IDLE, INVENTORY, "start"),
        (INVENTORY, PLAN, "inventoried"),
        (PLAN, VERIFY_ROLLBACK, "planned"),
        (VERIFY_ROLLBACK, REMOVE, "verified"),
        (REMOVE, VALIDATE, "removed"),
        (VALIDATE, IDLE, "validated"),
    ]


def test_nothing_to_prune_goes_from_plan_to_idle(spans) -> None:
    provider, _ = spans
    machine = PruneMachine(handlers(**{PLAN: lambda ctx: "nothing_to_prune"}))
    assert run(machine, provider, FakeContext()) == IDLE
    assert machine.visited == [IDLE, INVENTORY, PLAN, IDLE]


def test_failure_in_remove_ends_in_failed_records_error_and_next_run_resets(spans) -> None:
    provider, exporter = spans

    def boom(ctx: FakeContext) -> str:
        raise RuntimeError("podman exploded")

    machine = PruneMachine(handlers(**{REMOVE: boom}), tracer=provider.get_tracer("t"))
    ctx = FakeContext()
    assert run(machine, provider, ctx) == FAILED
    assert machine.state == FAILED  # stays visible until the next request
    assert ctx.failed_state == REMOVE and "podman exploded" in (ctx.error or "")
    remove_span = next(
        s for s in exporter.get_finished_spans() if s.name == "edgeprune.state.Remove"
    )
    assert remove_span.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in remove_span.events)
    root = next(s for s in exporter.get_finished_spans() if s.name == "edgeprune.run")
    fail_event = next(e for e in root.events if e.attributes.get("trigger") == "fail")
    assert fail_event.attributes["source"] == REMOVE
    assert fail_event.attributes["dest"] == FAILED
    assert "podman exploded" in fail_event.attributes["error"]

    exporter.clear()
    machine._handlers[REMOVE] = handlers()[REMOVE]
    assert run(machine, provider, FakeContext()) == IDLE
    root = next(s for s in exporter.get_finished_spans() if s.name == "edgeprune.run")
    first = root.events[0].attributes
    assert (first["source"], first["dest"], first["trigger"]) == (FAILED, IDLE, "reset")
    assert machine.visited[0] == IDLE


@pytest.mark.parametrize("state", WORKING_STATES)
def test_a_failure_in_any_working_state_reaches_failed(state: str, spans) -> None:
    provider, _ = spans

    def boom(ctx: FakeContext) -> str:
        raise ValueError(f"bad {state}")

    machine = PruneMachine(handlers(**{state: boom}))
    ctx = FakeContext()
    assert run(machine, provider, ctx) == FAILED
    assert machine.visited[-2:] == [state, FAILED]
    assert ctx.failed_state == state


def test_replan_goes_back_to_inventory(spans) -> None:
    provider, _ = spans
    seen = {"n": 0}

    def remove(ctx: FakeContext) -> str:
        seen["n"] += 1
        return "replan" if seen["n"] == 1 else "removed"

    machine = PruneMachine(handlers(**{REMOVE: remove}))
    assert run(machine, provider, FakeContext()) == IDLE
    assert machine.visited == [
        IDLE,
        INVENTORY,
        PLAN,
        VERIFY_ROLLBACK,
        REMOVE,
        INVENTORY,
        PLAN,
        VERIFY_ROLLBACK,
        REMOVE,
        VALIDATE,
        IDLE,
    ]


def test_machine_is_strict_no_auto_transitions_and_illegal_triggers_fail(spans) -> None:
    provider, _ = spans
    machine = PruneMachine(handlers())
    assert not hasattr(machine, "to_Remove")  # auto transitions would add to_<state>
    with pytest.raises(MachineError):
        machine.trigger("removed")  # not allowed from Idle
    assert machine.state == IDLE
    # a handler returning a trigger that is illegal in its state is a failure of that state
    bad = PruneMachine(handlers(**{PLAN: lambda ctx: "validated"}))
    ctx = FakeContext()
    assert run(bad, provider, ctx) == FAILED
    assert ctx.failed_state == PLAN and "illegal trigger 'validated'" in (ctx.error or "")


def test_a_run_interrupted_mid_way_does_not_wedge_the_next_one(spans) -> None:
    provider, _ = spans

    def interrupted(ctx: FakeContext) -> str:
        raise KeyboardInterrupt  # not an Exception: escapes the driver

    machine = PruneMachine(handlers(**{REMOVE: interrupted}))
    with pytest.raises(KeyboardInterrupt):
        run(machine, provider, FakeContext())
    assert machine.state == REMOVE
    machine._handlers[REMOVE] = handlers()[REMOVE]
    assert run(machine, provider, FakeContext()) == IDLE
    assert machine.visited[0] == IDLE


def test_missing_handler_is_rejected_at_construction() -> None:
    table = handlers()
    del table[VALIDATE]
    with pytest.raises(ValueError, match="Validate"):
        PruneMachine(table)
