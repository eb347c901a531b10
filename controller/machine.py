"""The pruning state machine: states, the transition table, and the run driver.

The table below is the single definition of the machine; the diagrams in
`diagrams/` are generated from it. Each working state's behaviour lives in its
own module under `states/`: a handler takes the run context and returns the
name of the trigger to fire next. The driver opens one span per state visit
and records one span event per transition on the run's root span.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from transitions import EventData, Machine
from transitions.core import MachineError

log = logging.getLogger("edgeprune")

# transitions logs every callback at INFO: noise in a host agent's logs. Quiet it
# unless the host has set a level for it itself (then the host's choice stands).
_transitions_log = logging.getLogger("transitions")
if _transitions_log.level == logging.NOTSET:
    _transitions_log.setLevel(logging.WARNING)

IDLE = "Idle"
INVENTORY = "Inventory"
PLAN = "Plan"
VERIFY_ROLLBACK = "VerifyRollback"
REMOVE = "Remove"
VALIDATE = "Validate"
FAILED = "Failed"

STATES: tuple[str, ...] = (IDLE, INVENTORY, PLAN, VERIFY_ROLLBACK, REMOVE, VALIDATE, FAILED)
WORKING_STATES: tuple[str, ...] = (INVENTORY, PLAN, VERIFY_ROLLBACK, REMOVE, VALIDATE)

TRANSITIONS: tuple[dict[str, Any], ...] = (
    {"trigger": "start", "source": IDLE, "dest": INVENTORY},
    {"trigger": "inventoried", "source": INVENTORY, "dest": PLAN},
    {"trigger": "nothing_to_prune", "source": PLAN, "dest": IDLE},
    {"trigger": "planned", "source": PLAN, "dest": VERIFY_ROLLBACK},
    {"trigger": "dry_run_done", "source": VERIFY_ROLLBACK, "dest": IDLE},
    {"trigger": "verified", "source": VERIFY_ROLLBACK, "dest": REMOVE},
    {"trigger": "replan", "source": REMOVE, "dest": INVENTORY},
    {"trigger": "removed", "source": REMOVE, "dest": VALIDATE},
    {"trigger": "validated", "source": VALIDATE, "dest": IDLE},
    {"trigger": "fail", "source": list(WORKING_STATES), "dest": FAILED},
    {"trigger": "reset", "source": FAILED, "dest": IDLE},
)

Handler = Callable[[Any], str]
TransitionHook = Callable[[str, str, str, BaseException | None], None]


def build_machine(model: object, **kwargs: Any) -> Machine:
    """A strict machine over `model`: no auto transitions, unknown triggers raise."""
    return Machine(
        model=model,
        states=list(STATES),
        transitions=[dict(t) for t in TRANSITIONS],
        initial=IDLE,
        auto_transitions=False,
        send_event=True,
        **kwargs,
    )


class PruneMachine:
    """Drives one run at a time through the table; keeps its state between runs.

    A run that ends in Failed stays there until the next request, which first
    fires `reset` (Failed -> Idle): the failure stays visible until then.
    """

    state: str  # set by transitions

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        tracer: trace.Tracer | None = None,
        on_transition: TransitionHook | None = None,
    ) -> None:
        missing = set(WORKING_STATES) - set(handlers)
        if missing:
            raise ValueError(f"no handler for states {sorted(missing)}")
        self._handlers = dict(handlers)
        self._tracer = tracer or trace.get_tracer("edgeprune")
        self._on_transition = on_transition
        self._run_span: Span | None = None
        self.visited: list[str] = []
        self._fsm = build_machine(
            self,
            after_state_change="_record_transition",
            on_exception="_on_callback_error",
        )

    # -- transitions callbacks -------------------------------------------------
    def _record_transition(self, event: EventData) -> None:
        # In after-callbacks event.state is already the destination (design.md s6).
        source = event.transition.source
        dest = event.transition.dest or source
        trigger = event.event.name
        error: BaseException | None = event.kwargs.get("error")
        attributes: dict[str, str] = {"source": source, "dest": dest, "trigger": trigger}
        if error is not None:
            attributes["error"] = f"{type(error).__name__}: {error}"
        if self._run_span is not None:
            self._run_span.add_event("transition", attributes)
        self.visited.append(dest)
        if self._on_transition is not None:
            self._on_transition(source, dest, trigger, error)

    def _on_callback_error(self, event: EventData) -> None:
        # An illegal trigger is a programming error: raise it, do not hide it.
        if isinstance(event.error, MachineError):
            raise event.error
        # A failing callback must not leave the machine half-way: park in Failed.
        log.error("state machine callback failed: %s", event.error)
        self._fsm.set_state(FAILED)

    # -- the driver --------------------------------------------------------------
    def run(self, context: Any, run_span: Span) -> str:
        """Run one request to completion; return the final state (Idle or Failed).

        Never raises for a state's failure: the error is recorded on the state
        span, passed with the `fail` trigger, and kept on `context.error`.
        """
        self._run_span = run_span
        self.visited = []
        try:
            if self.state in WORKING_STATES:
                # A previous run was interrupted mid-way (it raised past the driver):
                # park it in Failed so the reset below is a legal, traced transition.
                self._fsm.set_state(FAILED)
            if self.state == FAILED:
                self.trigger("reset")  # type: ignore[attr-defined]
            else:
                self.visited.append(self.state)
            self.trigger("start")  # type: ignore[attr-defined]
            while self.state in WORKING_STATES:
                self._visit(self.state, context)
            return self.state
        finally:
            self._run_span = None

    def _visit(self, state: str, context: Any) -> None:
        with self._tracer.start_as_current_span(
            f"edgeprune.state.{state}", attributes={"edgeprune.state": state}
        ) as span:
            try:
                trigger = self._handlers[state](context)
                if trigger not in self._fsm.get_triggers(state):
                    raise RuntimeError(f"handler of {state} returned illegal trigger {trigger!r}")
            except Exception as error:  # a state's failure ends the run in Failed
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error)))
                context.fail(state, error)
                self.trigger("fail", error=error)  # type: ignore[attr-defined]
                return
        self.trigger(trigger)  # type: ignore[attr-defined]
