"""The gateway session's state machine: every allowed step, every refused one, and the audit rule.

The table is checked by examples (the lives a session really has) and
exhaustively (every (state, step) pair not in it is refused). A hypothesis
state machine drives random steps the way sessions.py does (an end only while
not ended) against a reference model written from the module's docstring, in
terms of the facts it names: started, recorded, refused by the log,
connected, ended. Above all: a session enters ENDED (where `SessionEnded` is
queued) at most once, and only when its start is in the log.
"""

import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from potluck.sshgateway.session_state import (
    TRANSITIONS,
    IllegalTransition,
    SessionState,
    Step,
    advance,
)

S = SessionState


def walk(*steps: Step) -> SessionState:
    state = S.NEW
    for step in steps:
        state = advance(state, step)
    return state


# --- Lives a session has ---------------------------------------------------------------------------


def test_a_session_that_runs_and_ends() -> None:
    assert walk(Step.START) is S.RECORDING
    assert walk(Step.START, Step.RECORDED) is S.CONNECTING
    assert walk(Step.START, Step.RECORDED, Step.CONNECTED) is S.OPEN
    assert walk(Step.START, Step.RECORDED, Step.CONNECTED, Step.END) is S.ENDED


def test_a_session_refused_before_it_reaches_the_host_is_still_recorded() -> None:
    # Allocation not running, host not connected, gateway stopping: ended while connecting.
    assert walk(Step.START, Step.RECORDED, Step.END) is S.ENDED


def test_a_user_who_leaves_while_the_start_is_recorded_is_recorded_once_it_is() -> None:
    assert walk(Step.START, Step.END) is S.ENDING
    assert walk(Step.START, Step.END, Step.RECORDED) is S.ENDED


def test_a_session_the_log_cannot_take_is_not_recorded_at_all() -> None:
    assert walk(Step.START, Step.NOT_RECORDED) is S.UNRECORDED
    assert walk(Step.START, Step.END, Step.NOT_RECORDED) is S.UNRECORDED


def test_a_user_who_leaves_before_asking_for_anything_leaves_no_record() -> None:
    assert walk(Step.END) is S.UNRECORDED


@pytest.mark.parametrize("state", list(SessionState))
def test_ended_means_over(state: SessionState) -> None:
    assert state.ended == (state in {S.ENDING, S.ENDED, S.UNRECORDED})


# --- Refused steps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "refused"),
    [
        ((), Step.RECORDED),  # nothing was being recorded
        ((), Step.CONNECTED),  # bridged before the start is in the log
        ((Step.START,), Step.START),  # asyncssh starts a session once
        ((Step.START,), Step.CONNECTED),  # still recording
        ((Step.START, Step.RECORDED), Step.RECORDED),
        ((Step.START, Step.RECORDED), Step.NOT_RECORDED),
        ((Step.START, Step.RECORDED, Step.CONNECTED), Step.CONNECTED),
        ((Step.START, Step.RECORDED, Step.CONNECTED, Step.END), Step.END),  # the first end wins
        ((Step.START, Step.END), Step.END),
        ((Step.START, Step.END), Step.CONNECTED),  # a session the user left is never bridged
        ((Step.START, Step.NOT_RECORDED), Step.END),
        ((Step.END,), Step.START),
    ],
)
def test_refused_steps(steps: tuple[Step, ...], refused: Step) -> None:
    state = walk(*steps)
    with pytest.raises(IllegalTransition) as raised:
        advance(state, refused)
    assert (raised.value.state, raised.value.step) == (state, refused)
    assert refused.value in str(raised.value)
    assert state.value in str(raised.value)


@pytest.mark.parametrize(
    ("state", "step"),
    [pair for pair in itertools.product(SessionState, Step) if pair not in TRANSITIONS],
)
def test_every_step_not_in_the_table_is_refused(state: SessionState, step: Step) -> None:
    with pytest.raises(IllegalTransition):
        advance(state, step)


@pytest.mark.parametrize(("pair", "target"), list(TRANSITIONS.items()))
def test_every_step_in_the_table_is_allowed(pair: tuple[SessionState, Step], target: SessionState) -> None:
    assert advance(*pair) is target


def test_terminal_states_lead_nowhere_and_everything_else_leads_somewhere() -> None:
    sources = {state for state, _ in TRANSITIONS}
    for state in SessionState:
        assert state.terminal == (state not in sources), state


def test_every_state_can_be_reached_from_new() -> None:
    reached, frontier = {S.NEW}, [S.NEW]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(SessionState)


def test_a_session_ends_only_by_an_end_or_by_the_logs_refusal() -> None:
    for (source, step), target in TRANSITIONS.items():
        if target.ended and not source.ended:
            assert step in (Step.END, Step.NOT_RECORDED), (source, step)


# --- Random lives against a model ------------------------------------------------------------------


class SessionLives(RuleBasedStateMachine):
    """Steps in any order, taken as sessions.py takes them; the state agrees with the facts."""

    @initialize()
    def new(self) -> None:
        self.state = S.NEW
        self.started = self.recorded = self.refused = self.connected = self.ended = False
        self.entered_ended = 0

    def expected(self) -> SessionState:
        if self.refused or (self.ended and not self.started):
            return S.UNRECORDED
        if self.ended:
            return S.ENDED if self.recorded else S.ENDING
        if self.connected:
            return S.OPEN
        if self.recorded:
            return S.CONNECTING
        return S.RECORDING if self.started else S.NEW

    def allowed(self, step: Step) -> bool:
        over = self.ended or self.refused
        if step is Step.START:
            return not self.started and not over
        if step in (Step.RECORDED, Step.NOT_RECORDED):
            return self.started and not self.recorded and not self.refused
        if step is Step.CONNECTED:
            return self.recorded and not self.connected and not over
        return not over

    @rule(step=st.sampled_from(Step))
    def take(self, step: Step) -> None:
        if step is Step.END and self.state.ended:
            return  # sessions.py never asks: the first end wins
        before = self.state
        try:
            after = advance(before, step)
        except IllegalTransition:
            assert not self.allowed(step), (before, step)
            return
        assert self.allowed(step), (before, step)
        self.state = after
        match step:
            case Step.START:
                self.started = True
            case Step.RECORDED:
                self.recorded = True
            case Step.NOT_RECORDED:
                self.refused = True
            case Step.CONNECTED:
                self.connected = True
            case Step.END:
                self.ended = True
        if after is S.ENDED and before is not S.ENDED:
            self.entered_ended += 1

    @invariant()
    def agrees_with_the_facts(self) -> None:
        assert self.state is self.expected()

    @invariant()
    def session_ended_is_queued_at_most_once_and_only_after_session_started(self) -> None:
        assert self.entered_ended <= 1
        if self.entered_ended:
            assert self.recorded
            assert self.ended

    @invariant()
    def nothing_is_bridged_before_the_start_is_in_the_log(self) -> None:
        if self.state is S.OPEN:
            assert self.recorded
            assert not self.ended


SessionLives.TestCase.settings = settings(max_examples=200, stateful_step_count=12, deadline=None)
TestSessionLives = SessionLives.TestCase
