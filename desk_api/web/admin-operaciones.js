// Admin page for the operations lists: disposition codes and canned replies (versioned sections over the admin API).
"use strict";

const { api, el, describeError } = Atiende;
const EP = { disp: "/api/v1/admin/dispositions", canned: "/api/v1/admin/canned" };
let n = 0;  // unique ids for the inputs' labels

const queuesOf = (text) => text.split(",").map((q) => q.trim()).filter(Boolean);

function dispRow(c) {
  const i = ++n;
  const remove = el("button", { class: "secondary", "data-testid": "disp-remove", "aria-label": `Quitar el código ${c.code || "nuevo"}`,
    onclick: (ev) => ev.target.closest("tr").remove() }, "Quitar");
  return el("tr", { "data-testid": "disp-row" },
    el("td", {}, el("input", { id: `dc${i}`, "aria-label": "Código", value: c.code || "", "data-field": "code", size: 16 })),
    el("td", {}, el("input", { id: `dl${i}`, "aria-label": "Texto", value: c.label || "", "data-field": "label", size: 30 })),
    el("td", {}, el("input", { id: `dq${i}`, "aria-label": "Colas, separadas por comas", value: (c.queues || []).join(", "), "data-field": "queues", size: 8 })),
    el("td", {}, el("input", { id: `da${i}`, type: "checkbox", "aria-label": "Activa", checked: c.active !== false, "data-field": "active" })),
    el("td", {}, remove));
}

function cannedRow(r) {
  const i = ++n;
  return el("fieldset", { class: "panel", "data-testid": "canned-row", style: "margin-top:.5rem" },
    el("legend", {}, r.title || "Respuesta nueva"),
    el("div", { class: "row" },
      el("div", {}, el("label", { for: `ci${i}` }, "Identificador"), el("input", { id: `ci${i}`, value: r.id || "", "data-field": "id", size: 16 })),
      el("div", {}, el("label", { for: `ct${i}` }, "Título"), el("input", { id: `ct${i}`, value: r.title || "", "data-field": "title", size: 26 })),
      el("div", {}, el("label", { for: `cq${i}` }, "Colas (vacío: todas)"), el("input", { id: `cq${i}`, value: (r.queues || []).join(", "), "data-field": "queues", size: 8 }))),
    el("label", { for: `cx${i}` }, "Texto"),
    el("textarea", { id: `cx${i}`, "data-field": "text", rows: 3, style: "width:100%" }, r.text || ""),
    el("button", { class: "secondary", onclick: (ev) => ev.target.closest("fieldset").remove() }, "Quitar esta respuesta"));
}

const field = (row, name) => row.querySelector(`[data-field=${name}]`);

async function save(what, doc, msg) {
  msg.className = "status-line"; msg.textContent = "Guardando…";
  try {
    const r = await api("PUT", EP[what], doc);
    msg.className = "status-line ok"; msg.textContent = `Guardado como versión ${r.version}.`;
  } catch (e) { msg.className = "status-line error"; msg.textContent = describeError(e); }
}

async function init() {
  const user = await Atiende.requireLogin("admin");
  document.getElementById("top").replaceWith(Atiende.header("/admin", user));
  const [disp, canned] = await Promise.all([api("GET", EP.disp), api("GET", EP.canned)]);
  document.getElementById("disp-required").checked = disp.document.required;
  const rows = document.getElementById("disp-rows");
  rows.replaceChildren(...disp.document.codes.map(dispRow));
  document.getElementById("disp-add").onclick = () => { rows.append(dispRow({})); rows.lastChild.querySelector("input").focus(); };
  document.getElementById("disp-save").onclick = () => save("disp", {
    required: document.getElementById("disp-required").checked,
    codes: [...rows.querySelectorAll("tr")].map((tr) => ({ code: field(tr, "code").value.trim(), label: field(tr, "label").value.trim(),
      queues: queuesOf(field(tr, "queues").value), active: field(tr, "active").checked })),
  }, document.getElementById("disp-msg"));
  const box = document.getElementById("canned-rows");
  box.replaceChildren(...canned.document.replies.map(cannedRow));
  document.getElementById("canned-add").onclick = () => { box.append(cannedRow({})); box.lastChild.querySelector("input").focus(); };
  document.getElementById("canned-save").onclick = () => save("canned", {
    replies: [...box.querySelectorAll("fieldset")].map((fs) => ({ id: field(fs, "id").value.trim(), title: field(fs, "title").value.trim(),
      queues: queuesOf(field(fs, "queues").value), text: field(fs, "text").value })),
  }, document.getElementById("canned-msg"));
}

init().catch((e) => { if (e.message !== "login" && e.message !== "forbidden") console.error(e); });
