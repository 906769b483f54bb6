// The desk's operations tools (issue 18): canned replies inserted into the reply box (filled on the server),
// the disposition asked for when closing a ticket or after a call, and SLA alerts for supervisors.
// For supervisors: "Llamadas en curso" (listen / whisper / barge on a live agent call) and, in a ticket's history,
// the recordings of the agent call an interaction names, fetched only when asked to.
// desk.js calls AtiendeOps.ticketTools(...), AtiendeOps.chosen(ref), AtiendeOps.liveCalls(user) and
// AtiendeOps.recordingsFor(interaction, ref); the rest listens to "atiende:event".
"use strict";

window.AtiendeOps = (() => {
  const { api, el, showRef, describeError } = Atiende;
  const picked = new Map();  // ticket ref -> the code chosen in its select (survives the live re-renders)
  const codeCache = new Map();  // queue -> {required, codes}

  async function codes(queue) {
    if (!codeCache.has(queue)) codeCache.set(queue, api("GET", `/api/v1/dispositions?queue=${encodeURIComponent(queue)}`));
    try { return await codeCache.get(queue); } catch (e) { codeCache.delete(queue); throw e; }
  }

  function say(msg, text, ok) { msg.className = `status-line ${ok ? "ok" : "error"}`; msg.textContent = text; }

  function insertAt(box, text) {
    const start = box.selectionStart ?? box.value.length, end = box.selectionEnd ?? box.value.length;
    box.value = box.value.slice(0, start) + text + box.value.slice(end);
    box.selectionStart = box.selectionEnd = start + text.length;
    box.focus();
  }

  function ticketTools(t, reply, msg) {
    const ref = encodeURIComponent(t.ref);
    const canned = el("select", { id: "canned-select", "data-testid": "canned-select" }, el("option", { value: "" }, "Elija una respuesta…"));
    api("GET", `/api/v1/canned?queue=${encodeURIComponent(t.queue)}`)
      .then((list) => canned.append(...list.map((r) => el("option", { value: r.id }, r.title)))).catch(() => {});
    const insert = el("button", { class: "secondary", "data-testid": "canned-insert", onclick: async () => {
      if (!canned.value) { say(msg, "Elija primero una respuesta predefinida.", false); return; }
      try {
        const r = await api("POST", `/api/v1/tickets/${ref}/canned/${encodeURIComponent(canned.value)}/render`);
        insertAt(reply, r.text);
      } catch (e) { say(msg, describeError(e), false); }
    } }, "Insertar en la respuesta");

    const current = (t.meta || {}).disposition;
    const disp = el("select", { id: "disposition-select", "data-testid": "disposition-select",
      onchange: () => picked.set(t.ref, disp.value) }, el("option", { value: "" }, current ? `Actual: ${current.label}` : "Sin tipificar"));
    const hint = el("span", { class: "small muted", "data-testid": "disposition-hint" });
    codes(t.queue).then((d) => {
      disp.append(...d.codes.map((c) => el("option", { value: c.code }, c.label)));
      disp.value = picked.get(t.ref) || "";
      hint.textContent = d.required ? (current ? "" : "Obligatoria para cerrar el ticket.") : "Opcional.";
    }).catch(() => {});
    return el("div", { class: "ops-tools", "data-testid": "ops-tools" },
      el("label", { for: "canned-select" }, "Respuesta predefinida"), el("div", { class: "row" }, canned, insert),
      el("label", { for: "disposition-select" }, "Tipificación (código de cierre)"), el("div", { class: "row" }, disp, hint));
  }

  // The code to send with a close; when none is chosen and one is required, the API answers 422 and the page
  // shows its message next to the select.
  function chosen(ref) { return picked.get(ref) || undefined; }

  // ---- after a call: the agent sets its disposition --------------------------------------------------------

  async function callPanel(ev) {
    const box = document.getElementById("ops-call") || el("section", { id: "ops-call", class: "panel", "data-testid": "call-disposition",
      "aria-label": "Tipificar la llamada" });
    const d = await codes(ev.queue || "N1").catch(() => ({ codes: [] }));
    const sel = el("select", { id: "call-disposition-select", "data-testid": "call-disposition-select" },
      el("option", { value: "" }, "Elija…"), ...d.codes.map((c) => el("option", { value: c.code }, c.label)));
    const msg = el("div", { class: "status-line", role: "status", "data-testid": "call-disposition-result" });
    box.replaceChildren(el("h2", { style: "margin-top:0;font-size:1.1rem" }, "Tipificar la llamada"),
      el("label", { for: "call-disposition-select" }, `Llamada de la cola ${ev.queue || "?"}`),
      el("div", { class: "row" }, sel, el("button", { "data-testid": "call-disposition-save", onclick: async () => {
        if (!sel.value) { say(msg, "Elija una tipificación.", false); return; }
        try {
          await api("POST", `/api/v1/calls/${encodeURIComponent(ev.call_id)}/disposition`, { code: sel.value });
          say(msg, "Tipificación guardada.", true);
        } catch (e) { say(msg, describeError(e), false); }
      } }, "Guardar")), msg);
    if (!box.isConnected) (document.getElementById("presence")?.closest(".panel") || document.querySelector("main .panel")).append(box);
  }

  // ---- SLA alerts for supervisors ------------------------------------------------------------------------

  function slaAlert(ev) {
    let list = document.getElementById("ops-alerts");
    if (!list) {
      list = el("ul", { id: "ops-alerts", class: "alerts", "data-testid": "sla-alerts", "aria-live": "polite", "aria-label": "Avisos de plazos" });
      document.querySelector("main").prepend(list);
    }
    const breach = ev.type === "sla.breach";
    list.prepend(el("li", { class: `status-line ${breach ? "error" : "warn"}`, style: `list-style:none;background:${breach ? "#fde7e5" : "#fff4d6"}`, "data-testid": `sla-${breach ? "breach" : "warning"}`, "data-ref": ev.ref },
      el("b", {}, breach ? "Plazo vencido: " : "Plazo a punto de vencer: "), ev.text || showRef(ev.ref), " ",
      el("button", { class: "secondary", onclick: (e) => e.target.closest("li").remove() }, "Descartar")));
    while (list.children.length > 20) list.lastChild.remove();
  }

  window.addEventListener("atiende:event", (e) => {
    const ev = e.detail || {};
    if (ev.type === "sla.warning" || ev.type === "sla.breach") slaAlert(ev);
    else if (ev.type === "call.offered" && ev.call_id) callPanel(ev);
  });

  // Errors in Spanish: the API's error_id when we know it, else what the status means (the server's own message,
  // in English, only as the last resort).
  const BY_STATUS = { 401: "Su sesión ha caducado: vuelva a entrar.", 403: "Su usuario no tiene permiso para esto.",
    404: "No se ha encontrado.", 409: "No se puede ahora: el estado ha cambiado.", 429: "Demasiadas peticiones: espere unos segundos.",
    503: "El servicio no está disponible ahora: vuelva a intentarlo en unos segundos." };

  function spanish(e, known) {
    if (!(e instanceof Atiende.ApiError)) return "No hay conexión con el servidor: vuelva a intentarlo.";
    const id = (e.body || {}).error_id;
    const text = known[id];
    if (typeof text === "function") return text(e.details || {});
    return text || BY_STATUS[e.status] || `Error ${e.status}: ${describeError(e)}`;
  }

  function who(id) { return String(id || "").replace(/^(user|agent|key):/, ""); }

  // ---- supervisors: the agent calls going on now, joined on their own phone (issue 18) ---------------------
  // The list comes from GET /api/v1/calls/live (what the wallboard reads: agent, queue, since, recording,
  // supervisor and mode). The desk's live events say when to read it again (call.connected / ended / supervision /
  // recording); a slow poll covers what no event says (a node that died, the live entry written just after
  // call.connected). The bridging node applies a request within a second and only then shows it in the list: until
  // then the mode asked for here is the one shown pressed.

  const MODES = [["listen", "Escuchar"], ["whisper", "Susurrar"], ["barge", "Intervenir"]];
  const MODE_NAMES = { listen: "escucha", whisper: "susurro al agente", barge: "intervención" };
  const ASKED = { listen: "Escucha solicitada", whisper: "Susurro solicitado", barge: "Intervención solicitada" };
  const SUPERVISE_ERRORS = {
    "already-supervised": (d) => `Otra persona ya supervisa esta llamada${d.supervisor ? ` (${who(d.supervisor)})` : ""}. Espere a que salga.`,
    "no-phone": "Su usuario no tiene un teléfono al que llamar (una dirección SIP o el teléfono del escritorio). "
      + "Pida a administración que se lo asigne en su ficha de agente.",
    "own-call": "Es su propia llamada: no puede supervisarla.",
    "call-not-live": "Esa llamada ya ha terminado.",
    "invalid-input": "La llamada no tiene un identificador válido.",
  };
  const POLL_MS = 5000;

  function clock(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "—";
    const hm = d.toLocaleTimeString("es-ES", { timeZone: "Europe/Madrid", hour: "2-digit", minute: "2-digit" });
    const min = Math.floor((Date.now() - d.getTime()) / 60000);
    return min >= 0 && min < 12 * 60 ? `${hm} (${min} min)` : hm;
  }

  function liveCalls(user) {
    const me = user.id || (user.user && user.user.id) || "";
    const rows = new Map();  // call id -> {tr, cells, buttons}: updated in place, so a focused button keeps its focus
    const asked = new Map();  // call id -> the mode asked for here and not yet shown by the list ("off": none)
    let calls = new Map();
    let seq = 0;
    const msg = el("p", { class: "status-line", role: "status", "aria-live": "polite", "data-testid": "live-calls-msg" });
    const body = el("tbody", {});
    const table = el("table", { class: "live-calls-table", "data-testid": "live-calls-table" },
      el("thead", {}, el("tr", {}, ["Agente", "Cola", "Desde", "Grabación", "Supervisión", "Acciones"].map(
        (h) => el("th", { scope: "col" }, h)))), body);
    const empty = el("p", { class: "muted small", "data-testid": "live-calls-empty" }, "Ningún agente está en una llamada ahora.");
    const panel = el("section", { id: "live-calls", class: "panel live-calls", "aria-labelledby": "live-calls-title",
      "data-testid": "live-calls" },
      el("h2", { id: "live-calls-title" }, "Llamadas en curso"),
      el("p", { class: "small muted" }, "Sonará su teléfono. Escuchar: nadie le oye. Susurrar: solo le oye el agente. "
        + "Intervenir: le oyen el agente y el ciudadano."),
      table, empty, msg);
    document.querySelector("main").prepend(panel);

    function say(text, ok) { msg.className = `status-line ${ok ? "ok" : "error"}`; msg.textContent = text; }

    function modeOf(c) {
      if (asked.has(c.call_id)) return asked.get(c.call_id);
      return c.supervisor && c.supervisor === me ? c.mode : null;
    }

    function supervisionText(c) {
      const mine = asked.get(c.call_id);
      if (mine && mine !== "off" && !(c.supervisor === me && c.mode === mine)) return `Usted (${MODE_NAMES[mine]}): llamando a su teléfono…`;
      if (c.supervisor) return `${c.supervisor === me ? "Usted" : who(c.supervisor)} (${MODE_NAMES[c.mode] || "en la llamada"})`;
      if (c.supervision_pending) return "Llamando al supervisor…";
      return "Nadie";
    }

    function rowFor(c) {
      let row = rows.get(c.call_id);
      if (!row) {
        const cells = [0, 1, 2, 3, 4].map(() => el("td", {}));
        const buttons = {};
        const group = el("div", { class: "row supervise", role: "group" });
        for (const [mode, label] of [...MODES, ["off", "Salir"]]) {
          buttons[mode] = el("button", { type: "button", class: "secondary", "data-testid": `live-${mode}-${c.call_id}`,
            onclick: () => { if (buttons[mode].getAttribute("aria-disabled") !== "true") supervise(c.call_id, mode); } }, label);
          group.append(buttons[mode]);
        }
        const tr = el("tr", { "data-testid": `live-call-${c.call_id}` }, cells, el("td", {}, group));
        row = { tr, cells, buttons, group };
        rows.set(c.call_id, row);
      }
      const agent = c.agent || "—";
      const texts = [agent, c.queue || "—", c.since ? clock(c.since) : "—",
        c.recording ? (c.recording_paused ? "En pausa" : "Grabando") : "Sin grabación", supervisionText(c)];
      texts.forEach((t, i) => { if (row.cells[i].textContent !== t) row.cells[i].textContent = t; });
      row.group.setAttribute("aria-label", `Supervisar la llamada de ${agent}`);
      const current = modeOf(c);
      const names = { listen: `Escuchar la llamada de ${agent}`, whisper: `Susurrar a ${agent}`,
        barge: `Intervenir en la llamada de ${agent}`, off: `Salir de la llamada de ${agent}` };
      for (const [mode, b] of Object.entries(row.buttons)) {
        b.setAttribute("aria-label", names[mode]);
        // aria-disabled, not disabled: the button that was just used keeps the keyboard focus
        if (mode === "off") b.setAttribute("aria-disabled", String(!(current && current !== "off") && !c.supervision_pending));
        else b.setAttribute("aria-pressed", String(current === mode));
      }
      return row.tr;
    }

    function draw(list) {
      calls = new Map(list.map((c) => [c.call_id, c]));
      for (const [id, mode] of asked) {  // the list caught up with what was asked, or someone else took over
        const c = calls.get(id);
        if (!c || (c.supervisor === me && c.mode === mode) || (mode === "off" && c.supervisor !== me)
            || (c.supervisor && c.supervisor !== me)) asked.delete(id);
      }
      for (const [id, row] of rows) if (!calls.has(id)) { row.tr.remove(); rows.delete(id); }
      list.forEach((c, i) => {
        const tr = rowFor(c);
        if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
      });
      table.hidden = !list.length;
      empty.hidden = Boolean(list.length);
    }

    async function refresh() {
      const mine = ++seq;  // answers may cross: only the newest one draws
      try {
        const data = await api("GET", "/api/v1/calls/live");
        if (mine === seq) draw(Array.isArray(data && data.calls) ? data.calls.filter((c) => c && c.call_id) : []);
      } catch (e) {
        if (mine === seq) say(`No se pudo cargar la lista de llamadas: ${spanish(e, {})}`, false);
      }
    }

    async function supervise(callId, mode) {
      const c = calls.get(callId) || {};
      const agent = c.agent || "el agente";
      const already = Boolean(c.supervisor === me && c.mode) || (asked.has(callId) && asked.get(callId) !== "off");
      try {
        await api("POST", `/api/v1/calls/${encodeURIComponent(callId)}/supervise`, { mode });
        asked.set(callId, mode);
        say(mode === "off" ? `Ha salido de la llamada de ${agent}.`
          : already ? `Modo cambiado a ${MODE_NAMES[mode]} en la llamada de ${agent}.`
          : `${ASKED[mode]} en la llamada de ${agent}: sonará su teléfono en unos segundos.`, true);
      } catch (e) {
        say(spanish(e, SUPERVISE_ERRORS), false);
      }
      if (calls.has(callId)) rowFor(calls.get(callId));
      refresh();
    }

    let timer = null;
    function soon(ms) { clearTimeout(timer); timer = setTimeout(refresh, ms); }
    window.addEventListener("atiende:event", (e) => {
      const ev = e.detail || {};
      if (!ev.type || !ev.type.startsWith("call.")) return;
      if (ev.type === "call.supervision" && ev.supervisor === me) {
        const c = calls.get(ev.call_id) || {};
        const agent = c.agent || ev.agent || "el agente";
        if (ev.state === "joined") {
          say(`Está en la llamada de ${agent} (${MODE_NAMES[ev.mode] || ev.mode}).`, true);
          if (calls.has(ev.call_id)) {  // what the list will say once the node has written it
            Object.assign(calls.get(ev.call_id), { supervisor: me, mode: ev.mode, supervision_pending: false });
            if (asked.get(ev.call_id) === ev.mode) asked.delete(ev.call_id);
            rowFor(calls.get(ev.call_id));
          }
        }
        else if (ev.state === "no_answer") { asked.delete(ev.call_id); say(`Su teléfono no contestó: no ha entrado en la llamada de ${agent}.`, false); }
        else if (ev.state === "left") asked.delete(ev.call_id);
      }
      soon(ev.type === "call.connected" ? 1500 : 300);  // the bridging node writes the live entry just after connecting
    });
    setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
    refresh();
    return { refresh };
  }

  // ---- supervisors: the recordings of a call, from the ticket's history ------------------------------------
  // Listed on demand (GET /api/v1/calls/{id}/recordings) and each one fetched only when asked to (every fetch of
  // the audio is audited as a listen): the audio is fetched once into the page, so seeking does not ask again.
  // The boxes are kept while the same ticket is open, so a live re-render does not stop what is playing.

  const REC_ID = /^rec-[0-9a-f]{20}$/;
  const RECORDING_ERRORS = {
    "recording-deleted": "La grabación se borró al cumplirse su plazo de conservación.",
    "not-found": "El audio de esta grabación no está disponible.",
    "invalid-input": "La referencia de la grabación no es válida.",
    forbidden: "Solo la supervisión puede escuchar las grabaciones.",
  };
  const recBoxes = new Map();  // interaction id -> its box, for the ticket open now
  const recUrls = [];
  let recTicket = null;

  function durationText(s) {
    if (typeof s !== "number" || !isFinite(s)) return null;
    const m = Math.floor(s / 60), r = Math.round(s % 60);
    return `${m}:${String(r).padStart(2, "0")}`;
  }

  async function fetchAudio(url) {
    const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "audio/wav" } });
    if (!resp.ok) {
      let data = {};
      try { data = await resp.json(); } catch (e) { /* not JSON */ }
      throw new Atiende.ApiError(resp.status, data);
    }
    return URL.createObjectURL(await resp.blob());
  }

  function recordingItem(doc, n) {
    const agent = doc.agent ? `atendida por ${doc.agent}` : "";
    const parts = [`Grabación ${n}`, agent, doc.started_at ? Atiende.when(doc.started_at) : "",
      durationText(doc.duration_s) ? `duración ${durationText(doc.duration_s)}` : "",
      Array.isArray(doc.pauses) && doc.pauses.length ? `${doc.pauses.length} ${doc.pauses.length === 1 ? "pausa" : "pausas"}` : ""]
      .filter(Boolean);
    const label = parts.join(" · ");
    const li = el("li", { "data-testid": `recording-${doc.id}` }, el("span", {}, label));
    if (doc.deleted) { li.append(" ", el("span", { class: "muted" }, "(borrada al cumplirse su plazo de conservación)")); return li; }
    if (doc.state === "recording") { li.append(" ", el("span", { class: "muted" }, "(la llamada sigue en curso)")); return li; }
    const note = el("span", { class: "small", role: "status" });
    const play = el("button", { type: "button", class: "secondary", "data-testid": `recording-play-${doc.id}`,
      "aria-label": `Escuchar grabación ${n}${agent ? ` ${agent}` : ""}`,
      onclick: async () => {
        if (play.getAttribute("aria-busy") === "true") return;
        play.setAttribute("aria-busy", "true");
        note.className = "small muted"; note.textContent = "Cargando la grabación…";
        try {
          const src = await fetchAudio(doc.audio || `/api/v1/recordings/${encodeURIComponent(doc.id)}/audio`);
          recUrls.push(src);
          const audio = el("audio", { controls: true, src, "data-testid": `recording-audio-${doc.id}`,
            "aria-label": `${label}` });
          play.replaceWith(audio);
          audio.focus();  // the button it replaces had the focus
          note.className = "small muted"; note.textContent = "Esta escucha queda registrada a su nombre.";
          audio.play().catch(() => { /* the controls are there */ });
        } catch (e) {
          play.removeAttribute("aria-busy");
          note.className = "small error"; note.textContent = spanish(e, RECORDING_ERRORS);
        }
      } }, "Escuchar grabación");
    li.append(" ", play, " ", note);
    return li;
  }

  // The box for one interaction of ticket `ref`, or null when it names no agent call: `data.call_id` (any kind
  // but a voicemail, whose audio is the message itself), `data.recording_id` or `data.recordings` (ids).
  function recordingsFor(it, ref) {
    if (ref !== recTicket) {
      recBoxes.clear();
      recUrls.splice(0).forEach((u) => URL.revokeObjectURL(u));
      recTicket = ref;
    }
    const d = (it && it.data) || {};
    const callId = it.kind !== "voicemail" && typeof d.call_id === "string" && d.call_id ? d.call_id : null;
    const ids = [d.recording_id, ...(Array.isArray(d.recordings) ? d.recordings : [])]
      .filter((x, i, all) => typeof x === "string" && REC_ID.test(x) && all.indexOf(x) === i);
    if (!callId && !ids.length) return null;
    const key = it.id || `${callId}|${ids.join(",")}`;
    if (recBoxes.has(key)) return recBoxes.get(key);
    const listId = `recordings-${String(key).replace(/[^A-Za-z0-9_-]/g, "_")}`;
    const list = el("ul", { id: listId, class: "recordings small", hidden: true });
    const msg = el("div", { class: "small", role: "status" });
    const open = el("button", { type: "button", class: "secondary", "data-testid": "call-recordings-open",
      "aria-expanded": "false", "aria-controls": listId,
      onclick: async () => {
        if (open.getAttribute("aria-expanded") === "true") {
          open.setAttribute("aria-expanded", "false"); list.hidden = true; return;
        }
        if (open.getAttribute("aria-busy") === "true") return;
        open.setAttribute("aria-busy", "true");  // not disabled: the button keeps the keyboard focus
        msg.className = "small muted"; msg.textContent = "Buscando las grabaciones…";
        try {
          let docs;
          if (callId) {
            const r = await api("GET", `/api/v1/calls/${encodeURIComponent(callId)}/recordings`);
            docs = (r && r.recordings) || [];
          } else {
            docs = await Promise.all(ids.map((id) => api("GET", `/api/v1/recordings/${encodeURIComponent(id)}`)));
          }
          list.replaceChildren(...docs.filter((x) => x && REC_ID.test(String(x.id))).map((x, i) => recordingItem(x, i + 1)));
          msg.textContent = list.children.length ? "" : "Esta llamada no tiene grabaciones.";
          msg.className = "small muted";
          list.hidden = !list.children.length;
          open.setAttribute("aria-expanded", String(!list.hidden));
        } catch (e) {
          msg.className = "small error"; msg.textContent = spanish(e, RECORDING_ERRORS);
        }
        open.removeAttribute("aria-busy");
      } }, "Grabaciones de la llamada");
    const box = el("div", { class: "call-recordings", "data-testid": "call-recordings" }, open, list, msg);
    recBoxes.set(key, box);
    return box;
  }

  return { ticketTools, chosen, liveCalls, recordingsFor };
})();
