// The desk's operations tools (issue 18): canned replies inserted into the reply box (filled on the server),
// the disposition asked for when closing a ticket or after a call, and SLA alerts for supervisors.
// desk.js calls AtiendeOps.ticketTools(...) and AtiendeOps.chosen(ref); the rest listens to "atiende:event".
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
    if (!box.isConnected) document.querySelector("main .panel").append(box);
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

  return { ticketTools, chosen };
})();
