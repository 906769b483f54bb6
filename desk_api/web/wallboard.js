// The wallboard: live figures per queue for supervisors; `?grande` shows them in large type for a wall screen.
"use strict";

const Wallboard = (() => {
  const { api, el, describeError } = Atiende;
  const big = new URLSearchParams(location.search).has("grande");
  const STATES = [["available", "Disponibles"], ["on_call", "En llamada"], ["wrap_up", "Tras llamada"], ["away", "Ausentes"]];

  function mmss(s) {
    if (s == null) return "—";
    const m = Math.floor(s / 60), r = Math.round(s % 60);
    return `${m}:${String(r).padStart(2, "0")}`;
  }
  function pct(x) { return x == null ? "—" : `${Math.round(x * 100)} %`; }

  function figure(label, value, testid, warn) {
    return el("div", { class: `kpi${warn ? " warn" : ""}`, "data-testid": testid },
      el("span", { class: "small muted" }, label), el("b", {}, value));
  }

  function queueCard(q, target) {
    const slWarn = q.service_level != null && q.service_level < 0.8;
    return el("section", { class: "panel", "data-testid": `wallboard-queue-${q.id}`, "aria-label": `Cola ${q.id}` },
      el("h2", { style: "margin-top:0" }, `${q.id} · ${q.name}`),
      el("div", { class: "kpis" },
        figure("Esperando", String(q.waiting), `wb-${q.id}-waiting`, q.waiting > 0 && q.agents.available === 0),
        figure("Espera más larga", mmss(q.longest_wait_s), `wb-${q.id}-longest`),
        figure(`Nivel de servicio (${target} s)`, pct(q.service_level), `wb-${q.id}-sl`, slWarn),
        figure("Abandonos", pct(q.abandon_rate), `wb-${q.id}-abandon`, q.abandon_rate != null && q.abandon_rate > 0.1),
        figure("Atendidas", String(q.answered), `wb-${q.id}-answered`)),
      el("div", { class: "kpis" }, STATES.map(([k, label]) => figure(label, String(q.agents[k] || 0), `wb-${q.id}-${k}`))));
  }

  // Supervision: join a live agent call on your own phone (listen, whisper, barge) or leave it.
  const MODES = [["listen", "Escuchar"], ["whisper", "Susurrar al agente"], ["barge", "Intervenir"], ["off", "Salir"]];
  const MODE_NAMES = { listen: "escuchando", whisper: "susurrando", barge: "interviniendo" };

  async function supervise(callId, mode) {
    const msg = document.getElementById("supervision-msg");
    try {
      await api("POST", `/api/v1/calls/${encodeURIComponent(callId)}/supervise`, { mode });
      msg.textContent = mode === "off" ? "Ha salido de la llamada." : "Sonará su teléfono en unos segundos.";
      refresh();
    } catch (e) { msg.textContent = describeError(e); }
  }

  function liveCalls(calls) {
    const rows = calls.map((c) => el("tr", { "data-testid": `wb-call-${c.call_id}` },
      el("td", {}, c.agent || "—"), el("td", {}, c.queue || "—"),
      el("td", {}, c.since ? new Date(c.since).toLocaleTimeString("es-ES") : "—"),
      el("td", {}, c.supervisor ? `${c.supervisor} (${MODE_NAMES[c.mode] || "llamando"})` : "—"),
      el("td", {}, c.recording ? (c.recording_paused ? "En pausa" : "Grabando") : "No"),
      el("td", {}, MODES.map(([mode, label]) => el("button", {
        type: "button", "data-testid": `wb-${mode}-${c.call_id}`,
        "aria-pressed": String(c.mode === mode), onclick: () => supervise(c.call_id, mode),
      }, label)))));
    return el("section", { class: "panel", style: "grid-column: 1 / -1", "aria-label": "Llamadas en curso",
      "data-testid": "wb-live-calls" },
      el("h2", { style: "margin-top:0" }, "Llamadas en curso"),
      calls.length ? el("table", {},
        el("thead", {}, el("tr", {}, ["Agente", "Cola", "Desde", "Supervisión", "Grabación", "Acciones"].map(
          (h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rows)) : el("p", { class: "muted" }, "Ningún agente está en una llamada."),
      el("p", { id: "supervision-msg", role: "status", "aria-live": "polite", class: "small" }));
  }

  async function refresh() {
    const err = document.getElementById("err");
    try {
      const data = await api("GET", "/api/v1/wallboard");
      const live = await api("GET", "/api/v1/calls/live").catch(() => ({ calls: [] }));
      const prev = document.getElementById("supervision-msg");
      const liveSection = liveCalls(live.calls || []);
      if (prev) liveSection.querySelector("#supervision-msg").textContent = prev.textContent;
      document.getElementById("board").replaceChildren(
        ...data.queues.map((q) => queueCard(q, data.service_level_s)),
        el("section", { class: "panel" }, el("div", { class: "kpis" },
          figure("Devoluciones de llamada pendientes", String(data.callbacks_due), "wb-callbacks"))),
        liveSection);
      document.getElementById("updated").textContent = `Actualizado ${new Date().toLocaleTimeString("es-ES")}`;
      err.textContent = "";
    } catch (e) { err.textContent = describeError(e); }
  }

  async function init() {
    const user = await Atiende.requireLogin("supervisor");
    document.getElementById("top").replaceWith(Atiende.header("/wallboard", user));
    if (big) {
      document.body.classList.add("big");
      const mode = document.getElementById("mode");
      mode.href = "/wallboard";
      mode.textContent = "Vista normal";
    }
    await refresh();
    setInterval(refresh, 3000);
  }

  return { init, refresh };
})();

Wallboard.init();
