"""The flow model: named flows of steps named like jambonz verbs, and their structural checks.

A flow document is plain data (YAML in `config/defaults/ivr.yaml`, or a version stored by an
admin through the API). `check_flows` refuses a document whose flows cannot run: an unknown
target, an unknown prompt or menu, or a set of flows that can loop forever without an exit.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Literal, NamedTuple

from pydantic import Field, model_validator

from config.base import Strict

Expect = Literal["intent", "yes_no", "reference", "town", "unit", "vehicle", "text", "digits"]
Topic = Literal["itv", "directory", "offices", "miespacio", "hours", "file_status", "query_status", "complaint",
                "procedure", "participation"]
Input = Literal["speech", "dtmf"]


class Policy(Strict):
    """How a gather copes with silence, with what it cannot understand and with doubt."""

    no_input_retries: int = Field(2, ge=0, le=5, description="re-asks after silence before giving up")
    no_match_retries: int = Field(1, ge=0, le=5, description="re-asks after an unrecognised answer")
    confirm_below: float = Field(0.6, ge=0, le=1, description="router confidence under this asks '¿Quiere ...?'")
    stt_confirm_below: float = Field(0.45, ge=0, le=1, description="speech confidence under this asks too")
    dtmf_fallback: bool = Field(True, description="offer the keypad menu when speech keeps failing")
    dtmf_retries: int = Field(1, ge=0, le=5)
    handover: str | None = Field("person", description="flow when every attempt failed; none = continue")
    no_input_prompt: str = "no_input"
    no_match_prompt: str = "no_match"


class _Step(Strict):
    id: str | None = Field(None, description="optional name shown in the call path")


class Say(_Step):
    verb: Literal["say"]
    text: str | None = None
    prompt: str | None = Field(None, description="key of `prompts`; cached audio on calls")
    barge_in: bool = True
    barge_in_ms: int | None = Field(None, ge=100, le=5000, description="caller speech that interrupts this prompt "
                                                                      "(default: speech.barge_in_ms); barge_in: false "
                                                                      "makes it non-interruptible by speech, keys "
                                                                      "always interrupt")

    @model_validator(mode="after")
    def _one(self) -> Say:
        if (self.text is None) == (self.prompt is None):
            raise ValueError("say needs exactly one of text or prompt")
        return self


class Gather(_Step):
    verb: Literal["gather"]
    text: str | None = None
    prompt: str | None = None
    input: list[Input] = Field(default_factory=lambda: list[Input](["speech", "dtmf"]))
    expect: Expect = "intent"
    into: str | None = Field(None, description="variable that receives the answer (default: the expect name)")
    menu: str | None = Field(None, description="DTMF menu (key of `menus`) for keyed choices and the fallback")
    num_digits: int | None = Field(None, ge=1, le=32)
    finish_key: str = Field("#", pattern=r"^[0-9*#]?$")
    timeout_s: float = Field(6.0, gt=0, le=60)
    max_s: float = Field(15.0, gt=0, le=120)
    barge_in: bool = True
    barge_in_ms: int | None = Field(None, ge=100, le=5000, description="as in say")
    policy: Policy | None = None

    @model_validator(mode="after")
    def _inputs(self) -> Gather:
        if not self.input:
            raise ValueError("gather needs at least one input (speech, dtmf)")
        return self


class Route(_Step):
    verb: Literal["route"]
    intents: dict[str, str] = Field(default_factory=dict, description="intent -> flow; merged over the document's `routes`")
    default: str | None = Field(None, description="flow for any other intent (default: person_flow)")


class Branch(_Step):
    verb: Literal["branch"]
    switch: str = Field(..., description="calendar (open|closed|holiday), intent, confidence (high|low), channel, a variable")
    cases: dict[str, str] = Field(default_factory=dict, description="value -> flow")
    default: str | None = Field(None, description="flow when no case matches; none = go on with the next step")


class Answer(_Step):
    verb: Literal["answer"]
    topic: Topic
    on_fail: str | None = Field(None, description="flow when no answer was found (default: person_flow)")


class Enqueue(_Step):
    verb: Literal["enqueue"]
    queue: str = "N1"
    announce: bool = True
    overflow_after_s: float = Field(300, gt=0, le=3600)
    overflow: str | None = Field(None, description="flow when the wait passes overflow_after_s")


class Record(_Step):
    verb: Literal["record"]
    text: str | None = None
    prompt: str | None = None
    into: str = "recording"
    max_s: float = Field(60, gt=0, le=600)
    end_silence_s: float = Field(3, gt=0, le=30)


class Voicemail(_Step):
    verb: Literal["voicemail"]
    queue: str = "N1"


class Transfer(_Step):
    verb: Literal["transfer"]
    to: str = Field(..., pattern=r"^sips?:\S+$")


class Hangup(_Step):
    verb: Literal["hangup"]


class Goto(_Step):
    verb: Literal["goto"]
    flow: str


Step = Annotated[Say | Gather | Route | Branch | Answer | Enqueue | Record | Voicemail | Transfer | Hangup | Goto,
                 Field(discriminator="verb")]
TERMINAL = (Enqueue, Voicemail, Transfer, Hangup)


class MenuOption(Strict):
    key: str = Field(..., pattern=r"^[0-9*#]$")
    intent: str


SurveyAfter = Literal["agent", "self_service"]


def _after_both() -> list[SurveyAfter]:
    return ["agent", "self_service"]


class Survey(Strict):
    """An optional keypad survey (1-5) when a contact ends: after an agent's call (the agent hung up first) and
    after a self-service answer; the chat asks the same in words."""

    enabled: bool = False
    after: list[SurveyAfter] = Field(default_factory=_after_both)
    question: str = ("Antes de terminar, ¿cómo valora la atención recibida? Pulse o diga un número del 1 al 5; "
                     "5 es la mejor nota.")
    thanks: str = "Gracias por su valoración."


class Flows(Strict):
    """The admin-editable IVR document (section `ivr`)."""

    entry_flow: str = "main"
    person_flow: str = Field("person", description="where 'cero' and hand-overs go while the line is open")
    closed_flow: str = Field("closed", description="where 'cero' goes while the line is closed")
    max_steps: int = Field(200, ge=10, le=5000, description="safety stop for one contact")
    policy: Policy = Field(default_factory=Policy, description="default recognition policy of gathers")
    labels: dict[str, str] = Field(default_factory=dict, description="intent -> how prompts name it")
    routes: dict[str, str] = Field(default_factory=dict, description="intent -> flow, used by `route` steps")
    menus: dict[str, list[MenuOption]] = Field(default_factory=dict)
    prompts: dict[str, str] = Field(default_factory=dict)
    flows: dict[str, list[Step]] = Field(default_factory=dict)
    survey: Survey = Field(default_factory=Survey, description="the post-contact survey")

    @model_validator(mode="after")
    def _structure(self) -> Flows:
        problems = check_flows(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def policy_of(self, step: Gather) -> Policy:
        return step.policy or self.policy

    def route_target(self, step: Route, intent: str | None) -> str:
        table = {**self.routes, **step.intents}
        if intent is not None and intent in table:
            return table[intent]
        return step.default or self.person_flow


def _edges(doc: Flows, steps: list[Step]) -> tuple[list[str], bool]:
    """Targets a flow may jump to, and whether it can end by itself (a terminal verb or its end)."""
    targets: list[str] = []
    for step in steps:
        if isinstance(step, TERMINAL):
            if isinstance(step, Enqueue) and step.overflow:
                targets.append(step.overflow)
            return targets, True
        if isinstance(step, Gather):
            handover = doc.policy_of(step).handover
            if handover:
                targets.append(handover)
        elif isinstance(step, Answer):
            targets.append(step.on_fail or doc.person_flow)
        elif isinstance(step, Branch):
            targets += list(step.cases.values())
            if step.default:
                targets.append(step.default)
                return targets, False
        elif isinstance(step, Route):
            targets += [doc.route_target(step, i) for i in {**doc.routes, **step.intents}]
            targets.append(step.default or doc.person_flow)
            return targets, False
        elif isinstance(step, Goto):
            targets.append(step.flow)
            return targets, False
    return targets, True


class FlowProblem(NamedTuple):
    """One reason a document cannot run, located for an editor: the flow and step it is on (None when it is about
    the document's top-level keys), the field to highlight and the sentence `check_flows` reports."""

    flow: str | None
    step: int | None
    field: str | None
    message: str


def check_flows(doc: Flows, queues: Collection[str] | None = None) -> list[str]:
    """Every reason this document cannot run, in words an admin can act on; [] when it is sound. With `queues`
    (the desk's), a step that hands over to any other queue is one too."""
    # A loop is also reported on each stuck flow.
    return list(dict.fromkeys(p.message for p in flow_problems(doc, queues)))


def queue_problems(doc: Flows, queues: Collection[str]) -> list[FlowProblem]:
    """The enqueue and voicemail steps that name a queue the desk does not have, located on their step."""
    known = ", ".join(sorted(queues))
    return [FlowProblem(name, i, "queue", f"flows.{name}[{i}] ({step.verb}): la cola «{step.queue}» no existe "
                                          f"(colas: {known})")
            for name, steps in doc.flows.items() for i, step in enumerate(steps)
            if isinstance(step, Enqueue | Voicemail) and step.queue not in queues]


def flow_problems(doc: Flows, queues: Collection[str] | None = None) -> list[FlowProblem]:
    """`check_flows` with each problem located on its flow, step and field, so an editor shows it on the step."""
    problems: list[FlowProblem] = [] if queues is None else queue_problems(doc, queues)
    names = set(doc.flows)
    here: tuple[str | None, int | None] = (None, None)

    def add(message: str, field: str | None = None) -> None:
        problems.append(FlowProblem(here[0], here[1], field, message))

    def target(where: str, name: str | None, what: str = "flow", field: str | None = None) -> None:
        if name is not None and name not in names:
            add(f"{where}: {what} {name!r} does not exist", field)

    for key in ("entry_flow", "person_flow", "closed_flow"):
        target(key, getattr(doc, key), field=key)
    for intent, flow in doc.routes.items():
        target(f"routes.{intent}", flow, field=f"routes.{intent}")
    for menu, options in doc.menus.items():
        keys = [o.key for o in options]
        if len(keys) != len(set(keys)):
            add(f"menus.{menu}: a key is used twice", f"menus.{menu}")
    if doc.policy.handover:
        target("policy.handover", doc.policy.handover, field="policy.handover")
    for name, steps in doc.flows.items():
        for i, step in enumerate(steps):
            here = (name, i)
            where = f"flows.{name}[{i}] ({step.verb})"
            prompt = getattr(step, "prompt", None)
            if isinstance(prompt, str) and prompt not in doc.prompts:
                add(f"{where}: prompt {prompt!r} does not exist", "prompt")
            text = getattr(step, "text", None)
            if isinstance(text, str) and not text.strip():
                add(f"{where}: the text is empty", "text")  # a caller would hear nothing
            if isinstance(step, Gather):
                if step.text is None and step.prompt is None:
                    add(f"{where}: gather needs a text or a prompt", "text")
                if step.menu is not None and step.menu not in doc.menus:
                    add(f"{where}: menu {step.menu!r} does not exist", "menu")
                pol = doc.policy_of(step)
                target(where, pol.handover, field="policy.handover")
                for p in (pol.no_input_prompt, pol.no_match_prompt):
                    if p not in doc.prompts:
                        add(f"{where}: prompt {p!r} does not exist", "policy")
            elif isinstance(step, Record) and step.text is None and step.prompt is None:
                add(f"{where}: record needs a text or a prompt", "text")
            elif isinstance(step, Route):
                for intent, flow in step.intents.items():
                    target(f"{where} intent {intent}", flow, field=f"intents.{intent}")
                target(where, step.default, field="default")
            elif isinstance(step, Branch):
                for value, flow in step.cases.items():
                    target(f"{where} case {value}", flow, field=f"cases.{value}")
                target(where, step.default, field="default")
            elif isinstance(step, Answer):
                target(where, step.on_fail, field="on_fail")
            elif isinstance(step, Enqueue):
                target(where, step.overflow, field="overflow")
            elif isinstance(step, Goto):
                target(where, step.flow, field="flow")
    if problems:
        return problems
    stuck = _stuck(doc)
    if stuck:
        message = _loops_message(stuck)
        # One sentence for the document (what the API says), and the same on the last step of each stuck flow:
        # that is where an exit (hangup, enqueue...) or a jump to a flow that ends would fix it.
        problems.append(FlowProblem(None, None, None, message))
        for name in stuck:
            last = len(doc.flows[name]) - 1
            problems.append(FlowProblem(name, max(last, 0), None, message))
    return problems


def _loops(doc: Flows) -> list[str]:
    """Flows reachable from the entry from which no path ever ends the contact."""
    stuck = _stuck(doc)
    return [_loops_message(stuck)] if stuck else []


def _loops_message(stuck: list[str]) -> str:
    return (f"flows {', '.join(sorted(stuck))} loop without exit: no path from them reaches hangup, enqueue, voicemail, "
            "transfer or the end of a flow")


def _stuck(doc: Flows) -> list[str]:
    """Flows reachable from the entry from which no path ever ends the contact."""
    graph = {name: _edges(doc, steps) for name, steps in doc.flows.items()}
    can_end = {name for name, (_, ends) in graph.items() if ends}
    changed = True
    while changed:
        changed = False
        for name, (targets, _) in graph.items():
            if name not in can_end and any(t in can_end for t in targets):
                can_end.add(name)
                changed = True
    reachable: list[str] = []
    todo = [doc.entry_flow]
    while todo:
        name = todo.pop()
        if name in reachable or name not in graph:
            continue
        reachable.append(name)
        todo += graph[name][0]
    return [n for n in reachable if n not in can_end]


class _Unchecked(Flows):
    """The same model without the structural check, so `locate_problems` can locate each problem on its step."""

    @model_validator(mode="after")
    def _structure(self) -> _Unchecked:
        return self


def locate_problems(data: object, queues: Collection[str] | None = None) -> list[FlowProblem]:
    """Every problem of a document as an editor shows it: field errors (types, unknown keys, a say without text) and
    the structural ones, each on its flow and step when it has one. [] when the document would be accepted. With
    `queues` (the desk's), a step naming another queue is one too."""
    from pydantic import ValidationError

    try:
        doc = _Unchecked.model_validate(data)
    except ValidationError as exc:
        out: list[FlowProblem] = []
        for err in exc.errors():
            loc = list(err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if len(loc) >= 3 and loc[0] == "flows" and isinstance(loc[2], int):
                rest = [str(x) for x in loc[3:]]
                try:
                    step = data["flows"][loc[1]][loc[2]] if isinstance(data, dict) else None
                except (KeyError, IndexError, TypeError):
                    step = None
                verb = step.get("verb") if isinstance(step, dict) else None
                if rest and rest[0] == verb:  # the discriminated union names the verb first: not a field
                    rest = rest[1:]
                field = ".".join(rest) or None
                where = f"flows.{loc[1]}[{loc[2]}]" + (f".{field}" if field else "")
                out.append(FlowProblem(str(loc[1]), loc[2], field, f"{where}: {msg}"))
            else:
                where = ".".join(str(x) for x in loc)
                out.append(FlowProblem(None, None, where or None, f"{where}: {msg}" if where else msg))
        return out
    return flow_problems(doc, queues)
