// The desk's callbacks (issue 21): take the next due callback, and call the citizen back from the agent's own phone.
// "Llamar al ciudadano" asks the server to ring the agent's phone (the desk's softphone or their SIP phone) and,
// once answered, to dial the number stored on the callback: the page never sends a number. Progress comes from
// the live events (`callback.call`, addressed to this agent; desk.js re-emits them as "atiende:event") and, as a
// fallback, from GET /api/v1/callbacks/{id}/call; the softphone's own controls hang up, mute and so on.
"use strict";

window.AtiendeCallbacks = (() => {
  const { api, el, showRef, when } = Atiende;
  const STATES = {
    ringing_agent: "Llamando a su teléfono…",
    dialing_citizen: "Llamando al ciudadano…",
    connected: "En llamada con el ciudadano.",
  };
  const OUTCOMES = {
    reached: "Llamada terminada: ha hablado con el ciudadano.",
    busy: "El ciudadano comunica. La devolución queda pendiente para otro intento.",
    no_answer: "El ciudadano no contesta. La devolución queda pendiente para otro intento.",
    wrong_number: "El número no existe o rechazó la llamada (número erróneo).",
  };
  const ENDINGS = {
    agent_no_answer: "Su teléfono no contestó: no se ha llamado al ciudadano. La devolución sigue siendo suya.",
    agent_hung_up: "Colgó antes de que contestara el ciudadano: queda anotado como intento sin respuesta.",
    failed: "La llamada no se pudo completar por un fallo del sistema. La devolución sigue siendo suya.",
  };
  const ERRORS = {
    "not-your-callback": "Esta devolución la tiene otra persona.",
    "callback-not-claimed": "Tome antes esta devolución.",
    "callback-call-in-progress": "Ya hay una llamada en curso para esta devolución.",
    "agent-busy": "Ya está en una llamada (o acaba de terminar una): espere a estar libre.",
    "phone-not-allowed": "La política de llamadas no permite llamar a este número (tarificación especial, corto o extranjero).",
    "no-phone": "Su ficha de agente no tiene teléfono al que llamar.",
    "no-line": "La línea telefónica no está activa ahora. Inténtelo más tarde.",
    "not-your-queue": "Esta devolución es de un ticket que no puede ver.",
  };
  const BY_STATUS = { 403: "No tiene permiso para esto.", 404: "Esa devolución ya no existe.", 409: "La devolución ha cambiado: recargue la lista." };

  function spanish(e) {
    if (!(e instanceof Atiende.ApiError)) return "No hay conexión con el servidor: vuelva a intentarlo.";
    return ERRORS[(e.body || {}).error_id] || BY_STATUS[e.status] || `Error ${e.status}.`;
  }

  function maskPhone(p) { const d = String(p || ""); return d.length > 4 ? `${d.slice(0, 3)}…${d.slice(-3)}` : d; }

  function setup(user, anchor) {
    const mine = (cb) => cb.claimed_by === user.id || cb.claimed_by === `user:${user.username}`;
    const list = el("ul", { class: "tickets", "data-testid": "callback-list" });
    const status = el("p", { class: "status-line", role: "status", "aria-live": "polite", "data-testid": "callback-call-status" });
    const watching = new Map();  // callback id -> call id being followed
    let current = null;  // the call this page follows now

    const say = (text, ok = true) => { status.className = `status-line ${ok ? "ok" : "error"}`; status.textContent = text; };

    function show(doc) {
      if (!doc || !doc.state) return;
      current = doc.state === "ended" ? null : doc.id;
      if (doc.state !== "ended") { say(STATES[doc.state] || doc.state); return; }
      watching.delete(doc.callback_id);
      say(ENDINGS[doc.ending] || OUTCOMES[doc.outcome] || "Llamada terminada.", doc.outcome === "reached");
      refresh();
    }

    async function poll(cbId, callId) {
      // Live events carry the progress; this is for a tab whose event stream is reconnecting.
      for (let i = 0; i < 600 && watching.get(cbId) === callId; i++) {
        await new Promise((r) => setTimeout(r, 2000));
        if (watching.get(cbId) !== callId) return;
        try {
          const doc = await api("GET", `/api/v1/callbacks/${encodeURIComponent(cbId)}/call`);
          if (doc.id === callId) show(doc);
        } catch (e) { /* the next round tries again */ }
      }
    }

    async function call(cb, button) {
      button.disabled = true;
      try {
        const doc = await api("POST", `/api/v1/callbacks/${encodeURIComponent(cb.id)}/call`);
        watching.set(cb.id, doc.id);
        show(doc);
        poll(cb.id, doc.id);
      } catch (e) { say(spanish(e), false); button.disabled = false; }
    }

    function row(cb) {
      const ref = cb.ticket_ref ? showRef(cb.ticket_ref) : "sin ticket";
      const button = el("button", { type: "button", "data-testid": `callback-call-${cb.id}`,
        "aria-label": `Llamar al ciudadano (devolución del ticket ${ref})` }, "Llamar al ciudadano");
      button.addEventListener("click", () => call(cb, button));
      return el("li", { "data-testid": `callback-${cb.id}` },
        el("div", { class: "row" }, el("b", {}, ref), el("span", { class: "small muted" }, maskPhone(cb.phone))),
        el("div", { class: "small muted" }, `Intentos: ${(cb.attempts || []).length} · vence ${when(cb.due_at)}`),
        button);
    }

    async function refresh() {
      try {
        const all = await api("GET", "/api/v1/callbacks?status=in_progress");
        const held = (Array.isArray(all) ? all : []).filter(mine);
        list.replaceChildren(...held.map(row));
        if (!held.length) list.replaceChildren(el("li", { class: "muted small" }, "No tiene devoluciones de llamada tomadas."));
      } catch (e) { say(spanish(e), false); }
    }

    const next = el("button", { type: "button", class: "secondary", "data-testid": "callback-next",
      onclick: async () => {
        try {
          const cb = await api("POST", "/api/v1/callbacks/next");
          if (cb) { say(`Ha tomado la devolución ${cb.ticket_ref ? showRef(cb.ticket_ref) : ""}.`); refresh(); }
          else say("No hay devoluciones de llamada pendientes.");
        } catch (e) { say(spanish(e), false); }
      } }, "Tomar la siguiente devolución");
    const box = el("section", { "aria-labelledby": "callbacks-title", "data-testid": "callbacks" },
      el("h2", { id: "callbacks-title", style: "font-size:1rem;margin:.75rem 0 .25rem" }, "Devoluciones de llamada"),
      next, list, status);
    anchor.after(box);

    window.addEventListener("atiende:event", (e) => {
      const ev = e.detail || {};
      if (ev.type !== "callback.call" || ev.agent !== user.agent_id) return;
      if (current && ev.call_id !== current && !watching.has(ev.callback_id)) return;
      show({ id: ev.call_id, callback_id: ev.callback_id, state: ev.state, outcome: ev.outcome, ending: ev.ending });
    });
    refresh();
    return { refresh };
  }

  return { setup };
})();
