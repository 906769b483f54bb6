"""IVR flow documents: the defaults are sound; broken ones are refused with a reason an admin can act on."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from config.flows import Flows, check_flows
from config.loader import Loaded


def _doc(flows: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"entry_flow": "main", "person_flow": "person", "closed_flow": "person",
            "prompts": {"no_input": "x", "no_match": "y", "q": "¿Qué necesita?"},
            "flows": {"person": [{"verb": "enqueue", "queue": "N1"}], **flows}, **extra}


def _reasons(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as exc:
        Flows.model_validate(data)
    return str(exc.value)


def test_default_flows_are_sound(loaded: Loaded) -> None:
    doc = loaded.settings.ivr
    assert check_flows(doc) == []
    assert doc.entry_flow in doc.flows
    # every intent of the scenario has somewhere to go
    for intent in ("tasa_itv", "directorio", "oficinas", "horario", "estado_expediente", "estado_consulta",
                   "queja_sugerencia", "miespacio", "cita_previa", "hablar_agente"):
        assert doc.routes[intent] in doc.flows


def test_unknown_verb_is_refused() -> None:
    reason = _reasons(_doc({"main": [{"verb": "dance"}]}))
    assert "dance" in reason and "say" in reason


def test_missing_target_is_refused() -> None:
    reason = _reasons(_doc({"main": [{"verb": "say", "text": "hola"}, {"verb": "goto", "flow": "nowhere"}]}))
    assert "flows.main[1] (goto): flow 'nowhere' does not exist" in reason


def test_unknown_prompt_and_menu_are_refused() -> None:
    reason = _reasons(_doc({"main": [{"verb": "gather", "prompt": "nope", "menu": "m"}]}))
    assert "prompt 'nope' does not exist" in reason and "menu 'm' does not exist" in reason


def test_loop_without_exit_is_refused() -> None:
    reason = _reasons(_doc({"main": [{"verb": "say", "text": "a"}, {"verb": "goto", "flow": "b"}],
                            "b": [{"verb": "say", "text": "b"}, {"verb": "goto", "flow": "main"}]}))
    assert "loop without exit" in reason and "b, main" in reason


def test_loop_with_an_exit_is_accepted() -> None:
    # main asks; the gather's hand-over and the branch's "no" leave the loop
    Flows.model_validate(_doc({
        "main": [{"verb": "gather", "prompt": "q", "expect": "yes_no", "into": "again"},
                 {"verb": "branch", "switch": "again", "cases": {"yes": "main"}, "default": "bye"}],
        "bye": [{"verb": "hangup"}]}))


def test_say_needs_text_or_prompt() -> None:
    assert "exactly one of text or prompt" in _reasons(_doc({"main": [{"verb": "say"}]}))


def test_transfer_needs_a_sip_uri() -> None:
    assert "to" in _reasons(_doc({"main": [{"verb": "transfer", "to": "12345"}]}))
