// The agent desk: presence, the live queue, one ticket's whole trace, and what an agent does with it.
"use strict";

const { api, el, when, showRef, describeError } = Atiende;

const EP = {
  queues: "/api/v1/queues",
  tickets: (q) => `/api/v1/tickets?${q}`,
  ticket: (ref) => `/api/v1/tickets/${encodeURIComponent(ref)}`,
  interactions: (ref) => `/api/v1/tickets/${encodeURIComponent(ref)}/interactions`,
  action: (ref, what) => `/api/v1/tickets/${encodeURIComponent(ref)}/${what}`,
  presence: "/api/v1/agents/me/presence",
  claimNext: "/api/v1/tickets/claim-next",
  events: "/desk/api/events",
};

const CHANNEL = { phone: "teléfono", webchat: "chat web", email: "correo", whatsapp: "WhatsApp", telegram: "Telegram",
  office: "oficina", api: "API" };
const ACTOR = { citizen: "ciudadano", assistant: "asistente", ivr: "IVR", system: "sistema" };
const STATUS = { open: "pendiente", assigned: "asignado", escalated: "escalado", resolved: "resuelto", closed: "cerrado" };
const KIND = { query: "consulta", complaint: "queja", suggestion: "sugerencia", voicemail: "mensaje de voz", callback: "devolver llamada" };

const state = { user: null, agentId: null, tab: null, current: null, fresh: new Set(), lastEvent: null, lastEventId: null, renderSeq: 0, listSeq: 0 };

function agentIdOf(user) { return user.agent_id || (user.user && user.user.agent_id) || user.username || null; }
function levelOf(user) { return user.level || (user.user && user.user.level) || (Atiende.has(user, "agent_n2") ? 2 : 1); }

async function init() {
  state.user = await Atiende.requireLogin("agent_n1", "agent_n2", "supervisor");
  state.agentId = agentIdOf(state.user);
  document.getElementById("top").replaceWith(Atiende.header("/desk", state.user));
  // Supervisors see the agent calls going on now and join them from here (the API refuses anyone else).
  if (Atiende.has(state.user, "supervisor") && window.AtiendeOps) AtiendeOps.liveCalls(state.user);
  await setupQueues();
  setupPresence();
  setupCallState();
  // Callbacks the agent holds, each with "Llamar al ciudadano" (their own phone rings first; the server dials).
  if (window.AtiendeCallbacks && state.user.agent_id) AtiendeCallbacks.setup(state.user, document.getElementById("empty"));
  connectLive();
}

// ---- the agent's call: its state, and pausing the recording while the caller gives sensitive data ---------
const CALL_STATES = { "call.offered": "Sonando", "call.connected": "En llamada" };

function setupCallState() {
  const box = el("div", { id: "call-state", class: "row small", "data-testid": "call-state", role: "status",
    "aria-live": "polite", hidden: true });
  document.getElementById("presence").after(box);
  const call = { id: null, recording: false, paused: false, supervision: "" };
  const render = () => {
    box.hidden = !call.id;
    if (!call.id) { box.replaceChildren(); return; }
    const parts = [el("b", {}, call.state || "En llamada")];
    if (call.supervision) parts.push(el("span", {}, call.supervision));
    if (call.recording) {
      parts.push(el("span", { "data-testid": "recording-state" }, call.paused ? "Grabación en pausa" : "Grabando"));
      parts.push(el("button", { type: "button", class: "secondary", "data-testid": "recording-toggle",
        onclick: async () => {
          try {
            await api("POST", `/api/v1/calls/${encodeURIComponent(call.id)}/recording`,
              { action: call.paused ? "resume" : "pause" });
            call.paused = !call.paused; render();
          } catch (e) { box.append(el("span", { class: "error" }, Atiende.describeError(e))); }
        } }, call.paused ? "Reanudar grabación" : "Pausar grabación"));
    }
    box.replaceChildren(...parts);
  };
  window.addEventListener("atiende:event", (e) => {
    const ev = e.detail || {};
    if (!ev.type || !ev.type.startsWith("call.") || (ev.agent && ev.agent !== state.agentId)) return;
    if (ev.type === "call.offered" || ev.type === "call.connected") {
      if (!ev.agent) return;
      Object.assign(call, { id: ev.call_id, state: CALL_STATES[ev.type], paused: false, supervision: "",
        recording: ev.type === "call.connected" ? Boolean(ev.recording) : false });
    } else if (ev.call_id !== call.id) {
      return;
    } else if (ev.type === "call.ended") {
      call.id = null;
    } else if (ev.type === "call.recording") {
      call.paused = Boolean(ev.paused);
    } else if (ev.type === "call.supervision") {
      const names = { listen: "Supervisión: escucha", whisper: "Supervisión: le habla a usted", barge: "Supervisión: en la llamada" };
      call.supervision = ev.state === "joined" ? names[ev.mode] || "" : "";
    }
    render();
  });
}

async function setupQueues() {
  let queues = [];
  try { const data = await api("GET", EP.queues); queues = Array.isArray(data) ? data : data.queues || []; } catch (e) { queues = []; }
  if (!queues.length) queues = [{ id: "N1", level: 1 }, { id: "N2", level: 2 }];
  const level = levelOf(state.user);
  const supervisor = Atiende.has(state.user, "supervisor");
  const mine = queues.filter((q) => supervisor || (q.level || 1) === level);
  const tabs = [...mine.map((q) => ({ id: `queue:${q.id}`, label: `Cola ${q.id}`, query: `queue=${encodeURIComponent(q.id)}` })),
    { id: "mine", label: "Mis tickets", query: `assignee=${encodeURIComponent(state.agentId || "")}` }];
  const box = document.getElementById("queues");
  box.replaceChildren(...tabs.map((t) => el("button", { "data-tab": t.id, "data-testid": `tab-${t.id}`, onclick: () => selectTab(t) }, t.label)));
  if (Atiende.has(state.user, "agent_n1", "agent_n2") && state.agentId) {
    box.append(el("button", { class: "secondary", "data-testid": "claim-next", title: "El ticket más antiguo que espera en sus colas",
      onclick: async () => {
        try {
          const r = await api("POST", EP.claimNext);
          if (r && r.ticket) { refreshSoon(); openTicket(r.ticket.ref); }
          else document.getElementById("live").textContent = "No hay tickets esperando.";
        } catch (e) { document.getElementById("live").textContent = describeError(e); }
      } }, "Tomar el siguiente"));
  }
  selectTab(tabs[0]);
}

function selectTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll("#queues button")) b.classList.toggle("on", b.dataset.tab === tab.id);
  refreshList();
}

let refreshTimer = null;
function refreshSoon() { clearTimeout(refreshTimer); refreshTimer = setTimeout(refreshList, 150); }

async function refreshList() {
  if (!state.tab) return;
  const seq = ++state.listSeq;  // responses may arrive out of order: only the newest request draws
  let items = [];
  try {
    const data = await api("GET", EP.tickets(state.tab.query + "&limit=100"));
    items = Array.isArray(data) ? data : data.tickets || data.items || [];
  } catch (e) { document.getElementById("live").textContent = describeError(e); return; }
  if (seq !== state.listSeq) return;
  items = items.filter((t) => t.status !== "closed" && t.status !== "resolved");
  const list = document.getElementById("tickets");
  list.replaceChildren(...items.map((t) => el("li", {
    "data-ref": t.ref, "data-testid": `ticket-${t.ref}`,
    class: [state.current === t.ref ? "sel" : "", state.fresh.has(t.ref) ? "fresh" : ""].join(" "),
    onclick: () => openTicket(t.ref),
  },
  el("div", { class: "row" }, el("b", {}, showRef(t.ref)), el("span", { class: `badge ${t.status}` }, STATUS[t.status] || t.status),
    el("span", { class: "small muted" }, CHANNEL[t.channel] || t.channel)),
  el("div", { class: "small" }, t.subject),
  el("div", { class: "small muted" }, `${KIND[t.kind] || t.kind} · ${when(t.created_at)}`, t.due ? ` · vence ${when(t.due)}` : ""))));
  state.fresh.clear();
  document.getElementById("empty").style.display = items.length ? "none" : "block";
}

function setupPresence() {
  const box = document.getElementById("presence");
  const mark = (p) => { for (const b of box.querySelectorAll("button")) b.classList.toggle("on", b.dataset.presence === p); };
  mark(state.user.presence || (state.user.agent && state.user.agent.presence) || "");
  for (const b of box.querySelectorAll("button")) {
    b.addEventListener("click", async () => {
      try { await api("PUT", EP.presence, { presence: b.dataset.presence }); mark(b.dataset.presence); }
      catch (e) { document.getElementById("live").textContent = describeError(e); }
    });
  }
}

// Live events. EventSource reconnects by itself (sending Last-Event-ID) when the server ends a stream: after its
// maximum duration, or when this tab fell behind and was cut. An HTTP error (503 while the node is busy, 401 after
// the session ended) closes it for good, so the page opens a new one, later each time, resuming after the last
// event it saw (`last_event_id`). A `limit` event (too many tabs) stops that and says why.
let liveSource = null;
let liveDelay = 2000;

function connectLive() {
  const live = document.getElementById("live");
  document.getElementById("live-retry")?.remove();
  const url = state.lastEventId ? `${EP.events}?last_event_id=${encodeURIComponent(state.lastEventId)}` : EP.events;
  const source = new EventSource(url);
  liveSource = source;
  source.onopen = () => { live.textContent = "en directo"; live.className = "small ok"; liveDelay = 2000; };
  source.onerror = () => {
    live.textContent = "reconectando…"; live.className = "small muted";
    if (source.readyState !== EventSource.CLOSED || liveSource !== source) return;
    const wait = liveDelay * (0.5 + Math.random());  // spread, so that many tabs do not come back together
    liveDelay = Math.min(liveDelay * 2, 60000);
    setTimeout(() => { if (liveSource === source) connectLive(); }, wait);
  };
  source.addEventListener("limit", (msg) => {
    source.close();
    liveSource = null;
    let message = "Hay demasiadas conexiones en directo abiertas.";
    try { message = JSON.parse(msg.data).message || message; } catch (e) { /* keep the general message */ }
    live.textContent = message; live.className = "small error";
    const retry = el("button", { id: "live-retry", class: "secondary", "data-testid": "live-retry",
      onclick: () => { liveDelay = 2000; connectLive(); } }, "Reconectar");
    live.after(retry);
  });
  source.addEventListener("resync", () => { refreshSoon(); });  // events were missed for good: reload the lists
  source.onmessage = (msg) => {
    if (msg.lastEventId) state.lastEventId = msg.lastEventId;
    let ev; try { ev = JSON.parse(msg.data); } catch (e) { return; }
    state.lastEvent = ev;
    window.dispatchEvent(new CustomEvent("atiende:event", { detail: ev }));  // the softphone listens for call offers
    if (!ev.type || !ev.type.startsWith("ticket.")) return;
    if (ev.type === "ticket.created" && ev.ref) state.fresh.add(ev.ref);
    refreshSoon();
    if (ev.ref && ev.ref === state.current) openTicket(ev.ref, true);
  };
}

// ---- one ticket -----------------------------------------------------------------------------------------

function audioUrl(it) {
  const d = it.data || {};
  const url = d.recording_url || d.audio_url || d.url || d.recording;
  if (typeof url === "string" && (url.startsWith("/") || url.startsWith("http"))) return url;
  // A voicemail's audio is the message; the call_id of an agent call names its recordings (AtiendeOps.recordingsFor).
  if (d.call_id && it.kind === "voicemail") return `/api/v1/voicemails/${encodeURIComponent(d.call_id)}/audio`;
  return null;
}

// Written channels: what became of our messages (delivery statuses, bounces), files citizens sent, WhatsApp's window.
const DELIVERY = { sent: "Enviado", delivered: "Entregado", read: "Leído", failed: "No entregado" };

function deliveryLine(dv) {
  const failed = dv.status === "failed";
  const text = failed ? `No entregado: ${dv.reason || "el proveedor lo rechazó"}`
    : dv.held ? `Fuera de la ventana de 24 h de WhatsApp: se envió la plantilla «${dv.template}»; esta respuesta se entregará cuando el ciudadano vuelva a escribir.`
    : (DELIVERY[dv.status] || dv.status) + (dv.template ? ` (plantilla «${dv.template}»)` : "") + (dv.released ? " al volver a escribir el ciudadano" : "");
  return el("div", { class: `small delivery${failed ? " error" : ""}`, "data-testid": "delivery", "data-status": dv.status }, text);
}

function attachmentList(items) {
  return el("ul", { class: "small attachments", "data-testid": "attachments" }, items.map((a) => el("li", {},
    a.refused || !a.sha256 ? `${a.name} (no guardado: ${a.refused || "?"})`
      : el("a", { href: `/api/v1/tickets/${encodeURIComponent(state.current)}/attachments/${a.sha256}`, target: "_blank", rel: "noopener" },
        `${a.name} (${Math.max(1, Math.round((a.size || 0) / 1024))} kB)`),
    a.transcript ? el("div", {}, el("i", {}, "Transcripción: "), a.transcript) : null)));
}

function waWindow(t, items) {
  if (t.channel !== "whatsapp") return null;
  const last = items.filter((i) => i.direction === "in" && i.channel === "whatsapp").map((i) => Date.parse(i.at)).filter((x) => !isNaN(x)).sort((a, b) => b - a)[0];
  if (!last) return null;
  const until = last + 24 * 3600 * 1000;
  const open = Date.now() < until;
  return el("p", { class: `small ${open ? "ok" : "error"}`, "data-testid": "wa-window", "data-open": String(open) },
    open ? `Ventana de WhatsApp abierta hasta ${when(new Date(until).toISOString())}: las respuestas llegan al momento.`
      : `Ventana de 24 h de WhatsApp cerrada (último mensaje del ciudadano: ${when(new Date(last).toISOString())}). `
        + "Las respuestas se envían como plantilla aprobada y se entregan cuando vuelva a escribir.");
}

function renderInteraction(it) {
  const d = it.data || {};
  const who = ACTOR[it.actor] || String(it.actor || "").replace(/^(user|agent):/, "");
  const head = el("div", { class: "meta" }, `${when(it.at)} · ${it.kind} · ${CHANNEL[it.channel] || it.channel} · ${who}`);
  const body = [];
  if (it.kind === "status_change") body.push(el("div", { class: "text" }, `Estado: ${STATUS[d.from] || d.from || "?"} → ${STATUS[d.to] || d.to || "?"}`
    + (d.assignee ? ` (${d.assignee})` : "") + (it.text ? ` — ${it.text}` : "")));
  else if (it.kind === "escalation") body.push(el("div", { class: "text" }, `Escalado de ${d.from_queue || "?"} a ${d.to_queue || "?"}: ${it.text}`));
  else if (it.text) body.push(el("div", { class: "text" }, it.text));
  if (Array.isArray(d.attachments) && d.attachments.length) body.push(attachmentList(d.attachments));
  if (it.direction === "out" && d.delivery && d.delivery.status) body.push(deliveryLine(d.delivery));
  if (it.kind === "voicemail" || it.kind === "call") {
    const src = audioUrl(it);
    if (src) body.push(el("audio", { controls: true, preload: "none", src, "data-testid": "voicemail-audio" }));
    if (d.transcript && d.transcript !== it.text) body.push(el("div", { class: "text" }, el("i", {}, "Transcripción: "), d.transcript));
    const path = d.ivr_path || d.path;
    if (Array.isArray(path) && path.length) body.push(el("div", { class: "small muted" }, "Recorrido IVR: " + path.map((p) => (typeof p === "string" ? p : p.step || p.node || JSON.stringify(p))).join(" → ")));
  }
  // The recordings of the agent call this interaction names: supervisors only, each listen audited.
  if (Atiende.has(state.user, "supervisor") && window.AtiendeOps) {
    const recordings = AtiendeOps.recordingsFor(it, state.current);
    if (recordings) body.push(recordings);
  }
  return el("li", { class: it.direction || "internal", "data-kind": it.kind }, head, ...body);
}

async function openTicket(ref, quiet) {
  const same = state.current === ref;
  state.current = ref;
  const seq = ++state.renderSeq;  // live updates re-render the open ticket: only the newest render wins
  for (const li of document.querySelectorAll("#tickets li")) li.classList.toggle("sel", li.dataset.ref === ref);
  const view = document.getElementById("ticket");
  let data;
  try { data = await api("GET", EP.ticket(ref)); } catch (e) { if (seq === state.renderSeq) view.replaceChildren(el("p", { class: "error" }, describeError(e))); return; }
  const t = data.ticket || data;
  let items = data.interactions;
  if (!Array.isArray(items)) {
    try { const r = await api("GET", EP.interactions(ref)); items = Array.isArray(r) ? r : r.interactions || []; } catch (e) { items = []; }
  }
  if (seq !== state.renderSeq) return;
  // What the agent is typing and the last action's result survive a live re-render of the same ticket.
  const kept = same ? { reply: (view.querySelector("#reply-text") || {}).value || "", note: (view.querySelector("#escalate-note") || {}).value || "",
    flash: view.querySelector("[data-testid=action-result]") } : null;
  const citizen = data.citizen;
  const msg = kept && kept.flash ? kept.flash : el("div", { class: "status-line", "data-testid": "action-result", role: "status" });
  const active = ["open", "assigned", "escalated"].includes(t.status);
  const mineNow = Boolean(t.assignee) && t.assignee === state.agentId;
  const supervisor = Atiende.has(state.user, "supervisor");
  const isAgent = Atiende.has(state.user, "agent_n1", "agent_n2") && !Atiende.roles(state.user).includes("admin");
  const waiting = (t.status === "open" || t.status === "escalated") && !t.assignee;
  const canClaim = waiting && isAgent && (t.level || 1) <= levelOf(state.user);
  const canWork = active && (mineNow || supervisor);

  async function act(what, body, ok) {
    msg.className = "status-line"; msg.textContent = "…";
    try {
      const r = await api("POST", EP.action(t.ref, what), body);
      const d = r && r.delivery;
      const failed = d && d.error;
      msg.className = failed ? "status-line error" : "status-line ok";
      msg.textContent = failed ? `Guardada en el ticket, pero no entregada: ${d.error}`
        : d && !d.sent ? `Guardada en el ticket. El canal ${CHANNEL[d.channel] || d.channel} no admite respuestas escritas: llame al ciudadano.`
        : ok;
      const typed = document.querySelector(what === "reply" ? "#reply-text" : what === "escalate" ? "#escalate-note" : null);
      if (typed) typed.value = "";
      await openTicket(t.ref, true); refreshSoon();
    } catch (e) { msg.className = "status-line error"; msg.textContent = describeError(e); }
  }

  const reply = el("textarea", { id: "reply-text", "data-testid": "reply-text", placeholder: `Respuesta al ciudadano por ${CHANNEL[t.channel] || t.channel}` });
  const note = el("textarea", { id: "escalate-note", "data-testid": "escalate-note", placeholder: "Nota para el especialista (N2)" });
  if (kept) { reply.value = kept.reply; note.value = kept.note; }
  const actions = el("div", { class: "actions" },
    canClaim ? el("button", { "data-testid": "claim", onclick: () => act("claim", {}, "Ticket asignado a usted.") }, "Atender este ticket") : null,
    active && !canWork && !canClaim ? el("p", { class: "small muted" }, t.assignee ? `Lo atiende ${t.assignee}.` : `Espera en la cola ${t.queue}.`) : null,
    canWork ? el("div", {}, el("label", { for: "reply-text" }, "Responder en su canal"), reply,
      el("button", { "data-testid": "reply-send", onclick: () => reply.value.trim() && act("reply", { text: reply.value.trim() }, "Respuesta enviada.") }, "Enviar respuesta")) : null,
    canWork && window.AtiendeOps ? AtiendeOps.ticketTools(t, reply, msg) : null,
    canWork && t.level < 2 ? el("div", {}, el("label", { for: "escalate-note" }, "Escalar a N2"), note,
      el("button", { class: "secondary", "data-testid": "escalate", onclick: () => note.value.trim() ? act("escalate", { note: note.value.trim() }, "Escalado a N2.") : (msg.textContent = "Escriba una nota para el especialista.") }, "Escalar a N2")) : null,
    canWork ? el("div", { class: "row" }, el("button", { class: "danger", "data-testid": "close", onclick: () => act("close", { note: "", disposition: window.AtiendeOps ? AtiendeOps.chosen(t.ref) : undefined }, "Ticket cerrado.") }, "Cerrar ticket")) : null,
  );
  view.replaceChildren(...[
    el("div", { class: "row", style: "justify-content: space-between" },
      el("h2", { style: "margin:0", "data-testid": "ticket-ref" }, showRef(t.ref)),
      el("span", { class: `badge ${t.status}`, "data-testid": "ticket-status" }, STATUS[t.status] || t.status)),
    el("p", { style: "margin:.3rem 0" }, el("b", {}, t.subject)),
    el("p", { class: "small muted" }, `${KIND[t.kind] || t.kind} · cola ${t.queue} (N${t.level}) · ${CHANNEL[t.channel] || t.channel} · creado ${when(t.created_at)}`,
      t.due ? ` · vence ${when(t.due)}` : "", t.assignee ? ` · asignado a ${t.assignee}` : "", mineNow ? " (usted)" : "",
      t.trace_id ? ` · traza ${t.trace_id.slice(0, 12)}` : ""),
    citizen ? el("p", { class: "small" }, "Ciudadano: ", citizen.name || citizen.id, " ",
      (citizen.identities || []).map((i) => el("span", { class: "badge" }, `${i.kind}: ${i.value}`))) : null,
    waWindow(t, items),
    el("h3", {}, "Historia"),
    el("ul", { class: "trace", "data-testid": "trace" }, items.map(renderInteraction)),
    actions, msg].filter(Boolean));
  if (!quiet) view.scrollIntoView({ block: "nearest" });
}

init().catch((e) => { if (e.message !== "login" && e.message !== "forbidden") console.error(e); });
